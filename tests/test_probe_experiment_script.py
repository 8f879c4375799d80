"""benchmarks/probe_experiment.sh: the commands it runs, read back through a stand-in `azr` that prints
them, and the configs those commands give. The two arms must differ only where self-play and its control
are meant to differ."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from azr.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "probe_experiment.sh"


def commands(tmp_path: Path, *args: str) -> list[list[str]]:
    """The azr command lines the script runs for `args`, one per call."""
    log = tmp_path / "calls.txt"
    log.unlink(missing_ok=True)
    stand_in = tmp_path / "azr"
    stand_in.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {log}\necho >> {log}\n')
    stand_in.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "AZR": str(stand_in),
        "RUNS": str(tmp_path / "runs"),
        "RESULTS": str(tmp_path / "results"),
    }
    subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, check=True)
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def config_of(command: list[str]):
    """The TrainConfig an `azr train --config P --set K=V ...` command line resolves to."""
    assert command[0] == "train"
    preset = command[command.index("--config") + 1]
    overrides = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    steps = command[command.index("--steps") + 1]
    return load_config(preset, [*overrides, f"steps={steps}"])


def test_the_two_arms_share_model_update_solver_prompts_and_validation(tmp_path: Path) -> None:
    (selfplay,) = commands(tmp_path, "train", "selfplay", "60")
    (control,) = commands(tmp_path, "train", "control", "60")
    a, b = config_of(selfplay), config_of(control)
    assert (a.selfplay.mode, b.selfplay.mode) == ("self-play", "solver-only")
    assert a.selfplay.learnability_samples == 8 and a.selfplay.seed_file is None
    assert a.steps == b.steps == 60
    # mask_unchecked_outputs concerns proposer responses only, which the control has none of.
    same_optim = a.optim.model_copy(update={"mask_unchecked_outputs": b.optim.mask_unchecked_outputs})
    assert a.model == b.model and same_optim == b.optim and a.eval == b.eval
    assert a.generation.solve_max_new_tokens == b.generation.solve_max_new_tokens
    for field in ("prompt_format", "prompt_version", "solver_examples", "shared_solver_examples"):
        assert getattr(a.selfplay, field) == getattr(b.selfplay, field), field
    assert a.sequences_per_step == b.sequences_per_step
    assert a.eval.benchmarks == ["selfplay-probe"] and a.eval.every_steps > 0
    assert selfplay[selfplay.index("--run-dir") + 1].endswith("runs/probe-selfplay")


def test_the_distinct_arm_is_self_play_whose_copies_are_penalised(tmp_path: Path) -> None:
    (selfplay,) = commands(tmp_path, "train", "selfplay", "60")
    (distinct,) = commands(tmp_path, "train", "distinct", "60")
    a, b = config_of(selfplay), config_of(distinct)
    assert (a.selfplay.distinct_programs, b.selfplay.distinct_programs) == (False, True)
    assert (a.rewards.program_copy_reward, b.rewards.program_copy_reward) == (None, -0.5)
    assert a.selfplay.model_copy(update={"distinct_programs": True}) == b.selfplay
    assert a.rewards.model_copy(update={"program_copy_reward": -0.5}) == b.rewards
    assert a.model_copy(update={"selfplay": b.selfplay, "rewards": b.rewards}) == b
    assert distinct[distinct.index("--run-dir") + 1].endswith("runs/probe-distinct")


def test_the_masked_arm_is_the_strict_arm_whose_guessed_outputs_are_not_trained(tmp_path: Path) -> None:
    (strict,) = commands(tmp_path, "train", "strict", "60")
    (masked,) = commands(tmp_path, "train", "masked", "60")
    a, b = config_of(strict), config_of(masked)
    assert (a.optim.mask_unchecked_outputs, b.optim.mask_unchecked_outputs) == (False, True)
    assert a.model_copy(update={"optim": b.optim}) == b
    assert masked[masked.index("--run-dir") + 1].endswith("runs/probe-masked")


def test_the_kl_arm_adds_a_kl_term_and_the_behaviour_arm_behaviour_keys(tmp_path: Path) -> None:
    (masked,) = commands(tmp_path, "train", "masked", "60")
    (kl,) = commands(tmp_path, "train", "kl", "60")
    (behaviour,) = commands(tmp_path, "train", "behaviour", "60")
    a, b, c = config_of(masked), config_of(kl), config_of(behaviour)
    assert (a.optim.kl_coef, b.optim.kl_coef) == (0.0, 0.5)
    assert a.model_copy(update={"optim": b.optim}) == b
    assert a.optim.model_copy(update={"kl_coef": 0.5}) == b.optim
    assert (b.selfplay.distinct_behaviour, c.selfplay.distinct_behaviour) == (False, True)
    assert b.selfplay.model_copy(update={"distinct_behaviour": True}) == c.selfplay
    assert b.model_copy(update={"selfplay": c.selfplay}) == c
    assert behaviour[behaviour.index("--run-dir") + 1].endswith("runs/probe-behaviour")


def test_the_strict_arms_add_only_the_shortcut_rejection(tmp_path: Path) -> None:
    pairs = {"distinct": "strict", "control": "strict-control"}
    for plain_arm, strict_arm in pairs.items():
        (plain,) = commands(tmp_path, "train", plain_arm, "60")
        (strict,) = commands(tmp_path, "train", strict_arm, "60")
        a, b = config_of(plain), config_of(strict)
        assert (a.selfplay.reject_shortcut_tasks, b.selfplay.reject_shortcut_tasks) == (False, True)
        assert a.model_copy(update={"selfplay": b.selfplay}) == b
        assert a.selfplay.model_copy(update={"reject_shortcut_tasks": True}) == b.selfplay
        assert strict[strict.index("--run-dir") + 1].endswith(f"runs/probe-{strict_arm}")


def test_an_unknown_arm_is_refused(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "AZR": "/bin/false", "RUNS": str(tmp_path / "runs")}
    result = subprocess.run(
        ["bash", str(SCRIPT), "train", "selfplay2", "5"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "unknown arm selfplay2" in result.stderr


def test_a_begun_run_is_resumed_and_done_evaluations_are_kept(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "probe-selfplay"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("steps: 1\n")
    (resumed,) = commands(tmp_path, "train", "selfplay", "80")
    assert resumed == ["train", "--resume", str(run), "--steps", "80"]
    results = tmp_path / "results"
    results.mkdir()
    (results / "probe-selfplay.json").write_text("{}")
    (remaining,) = commands(tmp_path, "eval", "selfplay")
    assert remaining[remaining.index("--out") + 1] == str(results / "probe-selfplay-crux.json")
    (results / "probe-selfplay-crux.json").write_text("{}")
    assert commands(tmp_path, "eval", "selfplay") == []


@pytest.mark.parametrize("arm", ["base", "selfplay", "distinct", "control"])
def test_evaluations_use_identical_options_but_the_model(tmp_path: Path, arm: str) -> None:
    calls = commands(tmp_path, "eval", arm)
    expected = [f"probe-{arm}.json", f"probe-{arm}-crux.json"]
    assert [call[call.index("--out") + 1].rsplit("/", 1)[1] for call in calls] == expected
    for call in calls:
        model = call[call.index("--model") + 1]
        assert model == ("qwen2.5-coder-0.5b" if arm == "base" else str(tmp_path / "runs" / f"probe-{arm}"))
        assert call[call.index("--backend") + 1] == "transformers-int8"


def test_without_a_phase_it_prints_its_usage(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "train selfplay 60" in result.stdout
