"""benchmarks/learning_curve.py: Fisher's exact test and the first-k against last-k counts of a run."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture
def benchmark(benchmark_script) -> ModuleType:
    return benchmark_script("learning_curve")


def test_fisher_exact_matches_known_tables(benchmark: ModuleType) -> None:
    fisher = benchmark.fisher_exact_p
    # Fisher's tea-tasting table: 3 of 4 right against 1 of 4.
    assert fisher(3, 4, 1, 4) == pytest.approx(34 / 70)
    assert fisher(3, 20, 8, 20) == pytest.approx(0.15519, abs=1e-5)
    assert fisher(0, 20, 0, 20) == 1.0
    assert fisher(0, 10, 10, 10) == pytest.approx(2 / 184756)
    assert fisher(2, 5, 2, 5) == pytest.approx(1.0)


def write_run(root: Path, valid_induction: list[float]) -> None:
    root.mkdir()
    (root / "config.yaml").write_text("selfplay:\n  batch_size: 4\n  task_types: [induction]\n")
    with (root / "metrics.jsonl").open("w") as out:
        for step, rate in enumerate(valid_induction, start=1):
            record = {"step": step, "valid_rate/induction": rate, "time/step": 10.0, "time/update": 5.0}
            if step != 2:  # a step whose solver batch was empty logs no solve rate
                record["solve_rate/induction"] = 0.25
            out.write(json.dumps(record) + "\n")
    (root / "samples").mkdir()
    proposer_rewards = {1: [0.5, 0.0, -0.5, 0.25], 6: [0.0, 0.0, -1.0, 0.0]}
    for step, rewards in proposer_rewards.items():
        samples = [{"role": "propose", "task_type": "induction", "reward": r} for r in rewards]
        samples.append({"role": "solve", "task_type": "induction", "reward": 1.0})
        lines = "".join(json.dumps(sample) + "\n" for sample in samples)
        (root / "samples" / f"step_{step:06d}.jsonl").write_text(lines)


def test_window_pools_first_and_last_steps(
    benchmark: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "run", [0.0, 0.25, 0.25, 0.5, 0.75, 1.0])
    assert benchmark.main([str(tmp_path / "run"), "--window", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| 2 | 0.25 | — | — | — | — | — | 10 (5) |" in printed
    assert "| valid proposals | induction | 1/8 = 0.12 | 7/8 = 0.88 |" in printed
    # only a positive proposer reward (a valid task solved sometimes) counts; steps 2-5 have no samples file
    assert "| learnable proposals | induction | 2/4 = 0.50 | 0/4 = 0.00 |" in printed
    # step 2 logged no solve rate, so the first window holds one step's 4 draws
    assert "| solved | induction | 1/4 = 0.25 | 2/8 = 0.25 | 1.00 |" in printed


def test_a_directory_without_metrics_is_a_clear_error(
    benchmark: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert benchmark.main([str(tmp_path)]) == 2
    assert f"{tmp_path} has no metrics.jsonl: is it a run directory?" in capsys.readouterr().err


def probe_record(task_id: str, correct: bool) -> dict:
    """A results-file record of the probe task `task_id` (its benchmark is its type's)."""
    return {"benchmark": f"probe-{task_id.split('-')[0]}", "id": task_id, "correct": correct}


def test_validation_rows_carry_update_tokens_and_a_base_row_on_the_same_problems(
    benchmark: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    root.mkdir()
    (root / "config.yaml").write_text(
        "selfplay:\n  batch_size: 2\n  task_types: [deduction]\n"
        "eval:\n  benchmarks: [selfplay-probe]\n  limit: 2\n"
    )
    records = [
        {"step": 1, "update/tokens": 100, "update/sequence_tokens": 1000},
        {"step": 2, "update/tokens": 120, "update/sequence_tokens": 1200, "eval/probe-deduction": 0.5},
        {"step": 3, "update/tokens": 80, "update/sequence_tokens": 800},
        {"step": 4, "update/tokens": 90, "update/sequence_tokens": 900, "eval/probe-deduction": 1.0},
    ]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # The base file holds more problems than validation asks: only the first two count.
    base = {
        "records": [
            probe_record("deduction-000", True),
            probe_record("deduction-001", False),
            probe_record("deduction-002", False),
            {"benchmark": "cruxeval-o", "id": "0", "correct": True},
        ]
    }
    (tmp_path / "base.json").write_text(json.dumps(base))
    assert benchmark.main([str(root), "--window", "1", "--base", str(tmp_path / "base.json")]) == 0
    printed = capsys.readouterr().out
    assert "| step | sequence tokens so far | trained tokens so far | probe-deduction |" in printed
    assert "| 0 | 0 | 0 | 50.0 |" in printed
    assert "| 2 | 2200 | 220 | 50.0 |" in printed and "| 4 | 3900 | 390 | 100.0 |" in printed
    assert "| 3 | 3000 |" not in printed


def test_the_base_row_scores_the_probe_on_its_shortcut_proof_problems_too(benchmark: ModuleType) -> None:
    # abduction-000 is shortcut-proof, abduction-001 and -002 are solved by giving the output back.
    base = {
        "records": [
            probe_record("abduction-000", False),
            probe_record("abduction-001", True),
            probe_record("abduction-002", True),
            probe_record("abduction-003", True),
        ]
    }
    scores = benchmark.base_scores(base, ["probe-abduction"], limit=3)
    assert scores == {"probe-abduction": 2 / 3, "probe-abduction shortcut-proof": 0.0}
