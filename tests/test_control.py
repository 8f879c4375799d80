"""The solver-only RLVR control (`selfplay.mode: solver-only`): configuration, steps on a fixed split with a
scripted backend, the split left untouched, resume equal to an uninterrupted run, and the run read by
the learning-curve script and `azr report`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from azr.buffer import task_key
from azr.config import ConfigError, load_config
from azr.policy import load_policy
from azr.run_dir import RunDir
from azr.tasks import get_task_type, shipped_seed_path
from azr.trainer import Trainer, task_file_path
from test_selfplay_step import ScriptedBackend

B = 3
TYPES = ("deduction", "abduction", "induction")
SETTINGS = [
    "selfplay.mode=solver-only",
    "selfplay.seed_file=null",
    f"selfplay.batch_size={B}",
    "selfplay.induction_inputs=4",
    "selfplay.solver_examples=1",
    "generation.solve_max_new_tokens=16",
    "optim.micro_batch_size=3",
    "optim.lr=1e-3",
    "executor.workers=2",
    "executor.timeout_s=2.0",
    f"logging.samples_per_step={B}",
    "logging.tensorboard=false",
]


def write_split(path: Path) -> Path:
    """Eight deduction/abduction triplets whose outputs alternate 0 and 1, and three induction tasks."""
    rows = [
        {"snippet": f"def f(x):\n    return (x + {i}) % 2", "input": "0", "output": str(i % 2)}
        for i in range(8)
    ]
    rows += [
        {
            "snippet": f"def f(x):\n    return x * {k}",
            "inputs": ["1", "2", "3", "4"],
            "outputs": [str(k), str(2 * k), str(3 * k), str(4 * k)],
            "message": f"Multiplies by {k}.",
        }
        for k in (7, 9, 11)  # no program of the held-out probe, which a split must not hold
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def answer_one(task_type: str, role: str, prompt: str) -> str:
    """Deduction answers 1 (right on half the split), abduction answers unparseable, induction the rule
    of the multiply-by-7 task."""
    assert role == "solve", "solver-only must not propose"
    if task_type == "deduction":
        return " 1"
    if task_type == "abduction":
        return "@@@"
    return "x):\n    return x * 7"


@pytest.fixture
def split(tmp_path: Path) -> Path:
    return write_split(tmp_path / "split.jsonl")


@pytest.fixture
def make_trainer(tiny_model_dir: Path, tmp_path: Path, split: Path) -> Iterator[Callable[..., Trainer]]:
    trainers = []
    tokenizer = load_policy(tiny_model_dir, device="cpu").tokenizer

    def make(*extra: str, run_dir: Path | None = None, resume: bool = False) -> Trainer:
        if resume:
            run, config = RunDir.open(run_dir)
        else:
            overrides = [*SETTINGS, f"selfplay.train_tasks={split}", f"model.path={tiny_model_dir}", *extra]
            config = load_config("tiny-cpu", overrides)
            run = RunDir.create(run_dir or tmp_path / f"run{len(trainers)}", config)
        trainer = Trainer(config, run, resume=resume, backend=ScriptedBackend(tokenizer, answer_one))
        trainers.append(trainer)
        return trainer

    yield make
    for trainer in trainers:
        trainer.close()


def samples(trainer: Trainer, step: int) -> list[dict]:
    path = trainer.run.samples_dir / f"step_{step:06d}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def buffer_keys(trainer: Trainer) -> dict[str, list[str]]:
    return {name: [task_key(task) for task in buffer.tasks] for name, buffer in trainer.buffers.items()}


def test_solver_only_needs_a_split_and_no_proposer_settings(split: Path) -> None:
    with pytest.raises(ConfigError, match=r"set selfplay.train_tasks"):
        load_config("tiny-cpu", ["selfplay.mode=solver-only", "selfplay.seed_file=null"])
    with pytest.raises(ConfigError, match=r"selfplay.seed_file: null"):
        load_config("tiny-cpu", ["selfplay.mode=solver-only", f"selfplay.train_tasks={split}"])
    with pytest.raises(ConfigError, match=r"train_tasks is the split of selfplay.mode solver-only"):
        load_config("tiny-cpu", [f"selfplay.train_tasks={split}"])
    # One role trained: the micro-batch bound is B x types, not twice that.
    config = load_config("tiny-cpu", [*SETTINGS, f"selfplay.train_tasks={split}"])
    assert config.sequences_per_step == B * len(TYPES)
    with pytest.raises(ConfigError, match=r"\(1 roles x 3 task types x selfplay.batch_size = 9\)"):
        load_config("tiny-cpu", [*SETTINGS, f"selfplay.train_tasks={split}", "optim.micro_batch_size=10"])


def test_control_preset_is_cpu_coder_without_the_proposer() -> None:
    control, selfplay = load_config("cpu-coder-control"), load_config("cpu-coder")
    assert control.selfplay.mode == "solver-only"
    assert control.selfplay.train_tasks == "package:data/probe/train.jsonl"
    assert control.model == selfplay.model
    assert control.optim == selfplay.optim
    assert control.generation.solve_max_new_tokens == selfplay.generation.solve_max_new_tokens
    assert control.generation.backend == selfplay.generation.backend
    solver_prompts = (
        "prompt_format",
        "prompt_version",
        "solver_examples",
        "shared_solver_examples",
        "max_prompt_tokens",
        "induction_inputs",
    )
    for field in (*solver_prompts, "task_types"):
        assert getattr(control.selfplay, field) == getattr(selfplay.selfplay, field), field
    # As many trained sequences per update as a cpu-coder step.
    assert control.sequences_per_step == selfplay.sequences_per_step


def test_split_files_resolve_inside_the_package() -> None:
    deduction = get_task_type("deduction")
    assert task_file_path("builtin", deduction) == shipped_seed_path("io")
    shipped = task_file_path("package:data/programs/qwen2.5-coder-7b_io.jsonl", deduction)
    assert shipped == shipped_seed_path("io") and shipped.is_file()
    assert task_file_path("some/file.jsonl", deduction) == Path("some/file.jsonl")


def test_a_solver_only_step_solves_split_tasks_and_trains_only_the_solver(make_trainer, split: Path) -> None:
    trainer = make_trainer()
    before = buffer_keys(trainer)
    assert {name: len(keys) for name, keys in before.items()} == {
        "deduction": 8,
        "abduction": 8,
        "induction": 3,
    }
    split_ids = {name: {t.task_id for t in buffer.tasks} for name, buffer in trainer.buffers.items()}

    metrics = trainer.train_step()
    metrics2 = trainer.train_step()

    backend = trainer.backend
    assert backend.events == ["generate", "update_weights"] * 2
    assert all(Counter(call) == {(t, "solve"): B for t in TYPES} for call in backend.calls)
    assert buffer_keys(trainer) == before  # the split is never modified
    for record in (metrics, metrics2):
        assert not [
            key for key in record if "propose" in key or key.startswith(("valid_rate/", "buffer_added/"))
        ]
        for name in TYPES:
            assert 0.0 <= record[f"solve_rate/{name}"] <= 1.0
            assert f"reward/{name}/solve" in record and f"advantage_abs/{name}/solve" in record
        assert {
            "update/loss",
            "update/grad_norm",
            "update/tokens",
            "time/solve",
            "time/judge",
            "time/update",
        } <= set(record)
        assert record["time/step"] == pytest.approx(
            record["time/solve"] + record["time/judge"] + record["time/update"]
        )
    assert metrics["reward/abduction/solve"] == -1.0
    rows = samples(trainer, 1)
    assert len(rows) == B * len(TYPES) and all(r["role"] == "solve" for r in rows)
    for row in rows:
        assert row["task_id"] in split_ids[row["task_type"]]
        if row["task_type"] == "deduction":
            assert row["correct"] == (row["task"]["output"] == "1")
            assert row["reward"] == (1.0 if row["correct"] else -0.5)
    # Solver examples come from the split, as in self-play they come from the buffer.
    deduction_prompts = [r["prompt"] for r in rows if r["task_type"] == "deduction"]
    assert all(p.count(") % 2\n") == 2 for p in deduction_prompts)


def test_the_split_must_fit_in_the_buffer(make_trainer) -> None:
    with pytest.raises(ConfigError, match=r"do not fit in selfplay.buffer_cap"):
        make_trainer("selfplay.buffer_cap=5")


def test_a_split_holding_a_probe_program_is_refused(make_trainer, split: Path) -> None:
    from azr.probe import load_probe, seed_row

    leaked = load_probe("deduction")[5].task
    with split.open("a") as rows:
        rows.write(json.dumps(seed_row(leaked)) + "\n")
    with pytest.raises(ConfigError, match=r"1 task\(s\) share a program with the held-out probe"):
        make_trainer()


def test_a_control_run_killed_before_its_first_checkpoint_starts_again(make_trainer, tmp_path: Path) -> None:
    first = make_trainer("selfplay.buffer_cap=8", run_dir=tmp_path / "run")  # the split just fits
    split = buffer_keys(first)
    first.train_step()
    first.close()
    again = make_trainer(run_dir=tmp_path / "run", resume=True)
    assert again.step == 0
    assert buffer_keys(again) == split


def test_a_resumed_control_run_equals_an_uninterrupted_one(make_trainer, tmp_path: Path) -> None:
    straight = make_trainer(run_dir=tmp_path / "straight")
    for _ in range(3):
        straight.train_step()
        straight.save_checkpoint()

    interrupted = make_trainer(run_dir=tmp_path / "interrupted")
    interrupted.train_step()
    interrupted.save_checkpoint()
    interrupted.train_step()  # lost: killed before its checkpoint
    interrupted.close()
    resumed = make_trainer(run_dir=tmp_path / "interrupted", resume=True)
    assert resumed.step == 1
    assert buffer_keys(resumed) == buffer_keys(straight)
    resumed.train_step()
    resumed.train_step()

    assert resumed.step == straight.step == 3
    for step in (2, 3):
        assert samples(resumed, step) == samples(straight, step)
    for (name, a), b in zip(
        resumed.policy.model.named_parameters(), straight.policy.model.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    assert resumed.rng.getstate() == straight.rng.getstate()


def test_learning_curve_and_report_read_a_control_run(make_trainer, benchmark_script, capsys) -> None:
    from azr.report import build_report

    trainer = make_trainer()
    for _ in range(2):
        metrics = trainer.train_step()
        trainer.metrics.write(trainer.step, metrics)
    trainer.close()
    assert benchmark_script("learning_curve").main([str(trainer.run.root), "--window", "1"]) == 0
    table = capsys.readouterr().out
    assert "| solved | deduction |" in table and "proposals |" not in table
    assert build_report(trainer.run.root).is_file()


def test_reject_shortcut_tasks_leaves_the_shortcut_solvable_split_tasks_out(make_trainer) -> None:
    plain = make_trainer()
    strict = make_trainer("selfplay.reject_shortcut_tasks=true")
    # (x + i) % 2 on input 0 gives i % 2: for even i the input given back is the output (deduction) and
    # the output given back is an input that gives it (abduction). No x * k induction task is constant.
    assert {name: len(buffer) for name, buffer in plain.buffers.items()} == {
        "deduction": 8,
        "abduction": 8,
        "induction": 3,
    }
    kept = {name: buffer.tasks for name, buffer in strict.buffers.items()}
    assert [task.output for task in kept["deduction"]] == ["1"] * 4
    assert [task.output for task in kept["abduction"]] == ["1"] * 4
    assert len(kept["induction"]) == 3
    strict.train_step()
    assert all(r["task"]["output"] == "1" for r in samples(strict, 1) if r["task_type"] != "induction")
