"""End to end: `azr train` on a tiny random model, a SIGKILL in the middle of training, and a resume."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from azr.run_dir import RunDir
from azr.trainer import Trainer

TINY_SETTINGS = [
    "selfplay.batch_size=2",
    "selfplay.learnability_samples=2",
    "selfplay.references=2",
    "selfplay.induction_inputs=4",
    "selfplay.seed_file=null",
    "generation.propose_max_new_tokens=24",
    "generation.solve_max_new_tokens=12",
    "optim.micro_batch_size=4",
    "optim.lr=1e-3",
    "executor.workers=2",
    "executor.timeout_s=1.0",
    "logging.samples_per_step=1",
]


def azr(*args: str, **kwargs) -> subprocess.Popen:
    sets = [item for setting in TINY_SETTINGS for item in ("--set", setting)]
    return subprocess.Popen(
        [sys.executable, "-m", "azr", "train", *args, *sets],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def buffer_rows(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / "buffers.sqlite") as db:
        return db.execute("SELECT task_type, key, step FROM tasks ORDER BY id").fetchall()


def test_two_steps_write_a_complete_run_directory(tiny_model_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    validation = [
        "--set",
        "eval.every_steps=2",
        "--set",
        "eval.limit=2",
        "--set",
        "eval.benchmarks=[cruxeval-o,probe-abduction]",
    ]
    proc = azr("--model", str(tiny_model_dir), "--steps", "2", "--run-dir", str(run_dir), *validation)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert str(run_dir) in output

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["steps"] == 2
    assert config["model"]["path"] == str(tiny_model_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        for task_type in ("deduction", "abduction", "induction"):
            for role in ("propose", "solve"):
                assert -1.0 <= record[f"reward/{task_type}/{role}"] <= 1.0
            assert 0.0 <= record[f"valid_rate/{task_type}"] <= 1.0
        assert record["update/tokens"] > 0
        assert record["tokens/generated"] > 0
    assert "eval/cruxeval-o" not in records[0]
    assert 0.0 <= records[1]["eval/cruxeval-o"] <= 1.0
    # Validation's records are kept; the probe is scored on its shortcut-proof tasks too (abduction-000
    # is one, abduction-001 is solved by giving the output back).
    asked = [json.loads(line) for line in (run_dir / "eval" / "step_000002.jsonl").read_text().splitlines()]
    assert [(r["benchmark"], r["id"]) for r in asked if r["benchmark"] != "cruxeval-o"] == [
        ("probe-abduction", "abduction-000"),
        ("probe-abduction", "abduction-001"),
    ]
    assert records[1]["eval/probe-abduction shortcut-proof"] == float(asked[-2]["correct"])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    samples = [
        json.loads(line) for line in (run_dir / "samples" / "step_000002.jsonl").read_text().splitlines()
    ]
    assert {(s["task_type"], s["role"]) for s in samples} == {
        (t, r) for t in ("deduction", "abduction", "induction") for r in ("propose", "solve")
    }
    for sample in samples:
        if sample["role"] == "solve":  # each answer is stored with the question it was asked
            asked = (
                sample["task"]["message"] if sample["task_type"] == "induction" else sample["task"]["program"]
            )
            assert asked in sample["prompt"]
    assert any((run_dir / "tensorboard").iterdir())


def test_sigkill_mid_training_then_resume_loses_nothing(
    tiny_model_dir: Path, tmp_path: Path, kill_after_first_checkpoint
):
    run_dir = tmp_path / "run"
    proc = azr(
        "--model", str(tiny_model_dir), "--steps", "6", "--run-dir", str(run_dir), start_new_session=True
    )
    # 1.5 s after checkpoint 1: somewhere inside a later step (generation, sandbox, update or checkpoint).
    kill_after_first_checkpoint(proc, run_dir, 1.5)

    survivor = RunDir(run_dir)
    killed_at, folder = survivor.latest_checkpoint()
    saved_optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
    saved_rows = [row for row in buffer_rows(run_dir) if row[2] <= killed_at]

    # Resuming restores weights, optimizer, step counter and buffers exactly as checkpointed.
    run, config = RunDir.open(run_dir)
    trainer = Trainer(config, run, resume=True)
    try:
        assert trainer.step == killed_at
        restored = trainer.optimizer.state_dict()
        for key, state in saved_optimizer["state"].items():
            assert torch.equal(restored["state"][key]["exp_avg"], state["exp_avg"])
            assert float(restored["state"][key]["step"]) == killed_at
        assert buffer_rows(run_dir) == saved_rows
        assert [r["step"] for r in run.read_metrics()] == list(range(1, killed_at + 1))
    finally:
        trainer.close()

    proc = azr("--resume", str(run_dir), "--steps", str(killed_at + 1))
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    records = run.read_metrics()
    assert [r["step"] for r in records] == list(range(1, killed_at + 2))
    final_step, final_folder = run.latest_checkpoint()
    assert final_step == killed_at + 1
    state = torch.load(final_folder / "optimizer.pt", weights_only=True)["state"]
    assert all(float(s["step"]) == killed_at + 1 for s in state.values())
    assert not list(run.checkpoints_dir.glob(".staging-*"))


def test_bad_input_gets_a_clear_error_not_a_traceback(tmp_path: Path):
    missing = azr("--model", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r1"))
    output, _ = missing.communicate(timeout=120)
    assert missing.returncode == 2
    assert "error:" in output and "Traceback" not in output

    unknown = azr("--set", "selfplay.nonsense=1", "--run-dir", str(tmp_path / "r2"))
    output, _ = unknown.communicate(timeout=120)
    assert unknown.returncode == 2
    assert "selfplay.nonsense: unknown key" in output and "Traceback" not in output


def test_lora_run_trains_only_the_adapter_and_resumes_it(tiny_model_dir: Path, tmp_path: Path):
    from azr.config import load_config

    settings = [*TINY_SETTINGS, f"model.path={tiny_model_dir}", "model.lora.enabled=true", "model.lora.r=4"]
    config = load_config("tiny-cpu", settings)
    run = RunDir.create(tmp_path / "run", config)
    trainer = Trainer(config, run)
    try:
        frozen = {
            n: p.detach().clone() for n, p in trainer.policy.model.named_parameters() if "lora_" not in n
        }
        metrics = trainer.train_step()
        assert metrics["update/grad_norm"] >= 0.0
        for name, parameter in trainer.policy.model.named_parameters():
            if "lora_" not in name:
                assert torch.equal(parameter, frozen[name]), name
        trainer.save_checkpoint()
        adapter = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters() if "lora_" in n}
    finally:
        trainer.close()
    assert (run.checkpoint_dir(1) / "model" / "adapter_model.safetensors").is_file()

    resumed = Trainer(config, run, resume=True)
    try:
        assert resumed.step == 1
        restored = {n: p for n, p in resumed.policy.model.named_parameters() if "lora_" in n}
        assert restored.keys() == adapter.keys()
        assert all(torch.equal(restored[n], adapter[n]) for n in adapter)
        assert all(p.requires_grad for p in restored.values())
    finally:
        resumed.close()
