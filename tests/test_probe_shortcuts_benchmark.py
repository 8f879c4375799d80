"""benchmarks/probe_shortcuts.py: the answers that give the question back, and the scores with and without
the tasks a shortcut answer solves (which ones is `azr.probe`'s, tested in test_probe.py)."""

from __future__ import annotations

from types import ModuleType

import pytest

from azr.probe import ProbeTask
from azr.tasks import Task


@pytest.fixture
def copies(benchmark_script) -> ModuleType:
    return benchmark_script("probe_shortcuts")


CONSTANT = ProbeTask("abduction-000", "abduction", Task("def f(a):\n    return 'x'", "5", "'x'"), ())
SHIFT = ProbeTask("abduction-001", "abduction", Task("def f(a):\n    return a + 1", "5", "6"), ())
UPPER = ProbeTask("deduction-000", "deduction", Task("def f(s):\n    return s.upper()", "'AB'", "'AB'"), ())
LENGTH = ProbeTask("deduction-001", "deduction", Task("def f(s):\n    return len(s)", "'ab'", "2"), ())


TASKS = {task.id: task for task in (CONSTANT, SHIFT, UPPER, LENGTH)}


def test_copies_are_recognised_up_to_quotes_and_spacing(copies: ModuleType) -> None:
    assert copies.same_value('"AB"', "'AB'")
    assert copies.same_value("[1,2]", "[1, 2]")
    assert not copies.same_value("'ab'", "'AB'")
    assert not copies.same_value(None, "1")


def test_off_by_one_answers_need_a_single_number_input(copies: ModuleType) -> None:
    counting = Task("def f(n):\n    return n < 75", "70", "True")
    assert copies.off_by_one("71", counting) and copies.off_by_one(" 69.0", counting)
    assert not copies.off_by_one("70", counting) and not copies.off_by_one("True", counting)
    assert not copies.off_by_one(None, counting)
    assert not copies.off_by_one("3", Task("def f(a, b):\n    return a", "2, 9", "2"))
    assert not copies.off_by_one("1", Task("def f(b):\n    return b", "True", "True"))


def record(task_id: str, correct: bool, answer: str) -> dict:
    return {
        "benchmark": f"probe-{task_id.split('-')[0]}",
        "id": task_id,
        "correct": correct,
        "answer": answer,
    }


def test_scores_split_into_copy_solvable_and_copy_proof_tasks(copies: ModuleType) -> None:
    solvable = {"abduction-000", "deduction-000"}
    base = [
        record("abduction-000", False, "1"),
        record("abduction-001", True, "5"),
        record("deduction-001", True, "2"),
    ]
    after = [
        record("abduction-000", True, "'x'"),
        record("abduction-001", False, "6"),
        record("deduction-001", True, "2"),
    ]
    deduction, abduction = copies.split_scores(after, base, TASKS, solvable)
    # The after file copies both abduction outputs: right on the constant only, wrong on the copy-proof one.
    assert (abduction.right, abduction.copies) == (1, 2)
    assert (abduction.proof_problems, abduction.proof_right) == (1, 0)
    assert (abduction.proof_gained, abduction.proof_lost) == (0, 1)
    assert (deduction.right, deduction.copies, deduction.proof_right, deduction.proof_lost) == (1, 0, 1, 0)
    assert deduction.off_by_one == 0 and abduction.off_by_one is None
    (first,) = [s for s in copies.split_scores(base, None, TASKS, solvable) if s.task_type == "abduction"]
    assert first.proof_gained is None and first.proof_p is None


def test_a_file_that_is_no_results_file_is_a_clear_error(
    copies: ModuleType, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert copies.main([str(bad)]) == 2
    assert "error:" in capsys.readouterr().err
