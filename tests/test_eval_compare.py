"""`azr compare`: verdict flips and the sign test, counted problem by problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from azr.cli import app
from azr.evaluation.compare import compare_records, load_records, sign_test


def record(benchmark: str, id_: str, answer: str, correct: bool) -> dict:
    return {"benchmark": benchmark, "id": id_, "answer": answer, "correct": correct}


def test_sign_test_matches_the_binomial_tails() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(4, 4) == 1.0
    assert sign_test(8, 0) == pytest.approx(2 / 2**8)  # all eight flips one way
    assert sign_test(0, 8) == sign_test(8, 0)
    assert sign_test(5, 1) == pytest.approx(2 * (1 + 6) / 2**6)  # P(X <= 1) of Binomial(6, 1/2), twice


def test_flips_are_counted_per_benchmark_on_shared_problems_only() -> None:
    before = [
        record("cruxeval-o", "0", "1", False),  # gained
        record("cruxeval-o", "1", "2", True),  # lost
        record("cruxeval-o", "2", "3", True),  # unchanged, right
        record("cruxeval-o", "3", "x", False),  # text changed, still wrong
        record("cruxeval-o", "9", "z", True),  # not in the second file: ignored
        record("humaneval", "HumanEval/0", "a", False),
    ]
    after = [
        record("humaneval", "HumanEval/0", "b", True),
        record("cruxeval-o", "3", "y", False),
        record("cruxeval-o", "2", "3", True),
        record("cruxeval-o", "1", "5", False),
        record("cruxeval-o", "0", "4", True),
    ]
    crux, human = compare_records(before, after)
    assert (crux.benchmark, crux.problems, crux.before, crux.after) == ("cruxeval-o", 4, 0.5, 0.5)
    assert (crux.changed_answers, crux.gained, crux.lost, crux.p_value) == (3, 1, 1, 1.0)
    assert (human.problems, human.gained, human.lost, human.before, human.after) == (1, 1, 0, 0.0, 1.0)
    with pytest.raises(ValueError, match="share no problem"):
        compare_records(before, [record("math500", "0", "1", True)])


def test_cli_prints_the_table_and_rejects_files_that_are_not_results(tmp_path: Path) -> None:
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps({"records": [record("cruxeval-i", "0", "1", False)]}))
    after.write_text(json.dumps({"records": [record("cruxeval-i", "0", "2", True)]}))
    result = CliRunner().invoke(app, ["compare", str(before), str(after)])
    assert result.exit_code == 0, result.output
    assert "cruxeval-i" in result.output and "100.0%" in result.output
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"scores": {}}')
    result = CliRunner().invoke(app, ["compare", str(before), str(garbage)])
    assert result.exit_code == 2 and "not a results file" in result.output
    with pytest.raises(ValueError, match="No such file"):
        load_records(tmp_path / "missing.json")
