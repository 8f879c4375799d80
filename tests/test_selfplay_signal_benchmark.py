"""benchmarks/selfplay_signal.py: buffer diversity by program key and the solver's verbatim copies."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from azr.buffer import TaskBuffer
from azr.tasks import Task


@pytest.fixture
def signal(benchmark_script) -> ModuleType:
    return benchmark_script("selfplay_signal")


def test_renamed_identity_programs_count_as_one_program(signal: ModuleType) -> None:
    programs = {
        "induction": [
            "def f(a):\n    return a",
            "def f(value):\n    # the same\n    return value",
            "def f(x):\n    return x + 1",
            "def f(y):\n    return y + 1",
            "def f(s):\n    return s.upper()",
        ]
    }
    (row,) = signal.buffer_diversity(programs)
    assert (row.tasks, row.programs, row.identity) == (5, 3, 2)
    assert row.top3_share == pytest.approx(1.0)


def test_copies_are_counted_per_window_and_only_for_induction_answers(signal: ModuleType) -> None:
    example = "def f(a):\n    return a[::-1]"
    prompt = f"# worked example\n{example}\n# now you\n"

    def answer(response: str, correct: bool, task_type: str = "induction") -> dict:
        return {
            "task_type": task_type,
            "role": "solve",
            "prompt": prompt,
            "response": response,
            "correct": correct,
        }

    samples = {
        1: [answer(example, True), answer("def f(a):\n    return a * 2", False)],
        2: [answer(f"  {example}\n", False), answer("", False)],
        3: [answer(example, True), answer("a[::-1]", True, task_type="deduction")],
    }
    first, second = signal.induction_copies(samples, window=2)
    assert (first.first_step, first.last_step) == (1, 2)
    assert (first.answers, first.copies, first.copies_right) == (4, 2, 1)
    assert (second.first_step, second.answers, second.copies, second.copies_right) == (3, 1, 1, 1)


def test_proposals_are_counted_per_window_and_type(signal: ModuleType) -> None:
    def proposal(
        program: str | None, reward: float, task_type: str = "deduction", reason: str = "ok"
    ) -> dict:
        task = {"program": program} if program else None
        return {
            "role": "propose",
            "task_type": task_type,
            "valid": program is not None,
            "reason": reason if program is None else "ok",
            "task": task,
            "reward": reward,
        }

    samples = {
        1: [proposal("def f(q):\n    return q", 0.0), proposal("def f(q):\n    return q * 2", 0.25)],
        2: [proposal(None, -0.5), proposal("def f(z):\n    return z", 0.0, task_type="abduction")],
        3: [proposal("def f(w):\n    return w", 0.0), proposal(None, -0.5, reason="shortcut")],
    }
    rows = [
        (r.first_step, r.task_type, r.valid, r.identity, r.learnable, r.shortcut)
        for r in signal.proposal_windows(samples, 2)
    ]
    assert rows == [(1, "abduction", 1, 1, 0, 0), (1, "deduction", 2, 1, 1, 0), (3, "deduction", 1, 1, 0, 1)]


def test_reads_a_run_directory(
    signal: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    buffer = TaskBuffer(run / "buffers.sqlite", "deduction")
    buffer.add([Task("def f(b):\n    return b", "1", "1"), Task("def f(c):\n    return c * 3", "1", "3")])
    row = {"task_type": "induction", "role": "solve", "prompt": "p", "response": "q", "correct": False}
    (run / "samples" / "step_000001.jsonl").write_text(json.dumps(row) + "\n")
    assert signal.main([str(run)]) == 0
    printed = capsys.readouterr().out
    assert "| deduction | 2 | 2 | 1 | 1.00 |" in printed
    assert "| 1-20 | 1 | 0 | 0 |" in printed


def test_a_directory_that_is_no_run_is_a_clear_error(
    signal: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert signal.main([str(tmp_path)]) == 2
    assert "is it a run directory?" in capsys.readouterr().err


def test_guessed_outputs_are_compared_as_values_and_summed_per_window(signal: ModuleType) -> None:
    def proposal(response: str, output: str, advantage: float, task_type: str = "deduction") -> dict:
        return {
            "role": "propose",
            "task_type": task_type,
            "valid": True,
            "response": response,
            "task": {"program": "def f(x):\n    return x", "input": "1", "output": output},
            "advantage": advantage,
        }

    samples = {
        1: [
            proposal("x):\n    return [x]\nassert f(1) == [1]", "[1]", 0.5),
            proposal("x):\n    return x * 2\nassert f(2) == 5", "4", 0.75),
            proposal("x):\n    return x\nassert f('a') == \"a\"", "'a'", -0.25, task_type="abduction"),
        ],
        2: [
            proposal("x):\n    return x\nf(3)", "3", 1.0),  # no guess written: nothing to count
            proposal("x):\n    return x\nassert f(3) == 4", "3", -0.5, task_type="induction"),
        ],
        3: [proposal("x):\n    return x + 1\nassert f(1) == 3", "2", -1.0)],
    }
    first, second = signal.guessed_outputs(samples, window=2)
    assert (first.first_step, first.last_step, first.guesses, first.wrong) == (1, 2, 3, 1)
    assert first.advantage_wrong == pytest.approx(0.75)
    assert first.advantage_right == pytest.approx(0.25)
    assert (second.first_step, second.guesses, second.wrong, second.advantage_wrong) == (3, 1, 1, -1.0)
    assert second.advantage_right == 0.0


def test_off_by_one_tasks_and_the_top_output_are_counted_per_window(signal: ModuleType) -> None:
    def task(task_type: str, step: int, given: str, made: str) -> SimpleNamespace:
        return SimpleNamespace(task_type=task_type, step=step, input=given, output=made)

    tasks = [
        task("deduction", 0, "1", "2"),  # a seed: made by no step
        task("deduction", 1, "70", "71"),
        task("deduction", 2, "-400", "-401"),
        task("deduction", 2, "True", "False"),  # booleans are no numbers here
        task("deduction", 2, "'a'", "'High'"),
        task("abduction", 3, "2.5", "3.5"),
        task("abduction", 4, "[1]", "'High'"),
        task("induction", 3, "1", "2"),  # induction has no single input
    ]
    keys = ["a", "a", "b", "a", "c", "a", "a", "z"]
    rows = [
        (r.first_step, r.task_type, r.tasks, r.new_behaviours, r.off_by_one, r.top_output_share)
        for r in signal.behaviour_windows(tasks, window=2, keys=keys)
    ]
    # New behaviours: the seed's key "a" is known before step 1; each buffer keeps its own keys.
    assert rows == [(1, "deduction", 4, 2, 2, 0.25), (3, "abduction", 2, 1, 1, 0.5)]


def test_behaviour_keys_tell_programs_by_what_they_do(signal: ModuleType) -> None:
    def task(task_type: str, program: str, given: str) -> SimpleNamespace:
        return SimpleNamespace(task_type=task_type, program=program, input=given, output="0")

    keys = signal.behaviour_keys(
        [
            task("deduction", "def f(n):\n    return n + 1", "3"),
            task("deduction", "def f(x):\n    if x > 5000:\n        return 0\n    return x + 1", "9"),
            task("deduction", "def f(n):\n    return n + 2", "3"),
            task("induction", "def f(n):\n    return n + 1", "3"),
        ]
    )
    assert keys[0] == keys[1] != keys[2]
    assert keys[0].startswith("behaviour ") and keys[3].startswith("text ")
