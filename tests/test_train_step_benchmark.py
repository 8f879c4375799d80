"""benchmarks/train_step.py --compare: the switches that give the step before issue 17, the normalised
cost, the side-by-side rows, and a run of both steps on a tiny model."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from test_trainer import TINY_SETTINGS


@pytest.fixture
def benchmark(benchmark_script, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The script imports benchmarks/rollouts.py as its neighbour, as it does when run.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return benchmark_script("train_step")


def test_the_baseline_turns_the_update_optimisations_off(benchmark: ModuleType) -> None:
    from azr.config import load_config

    switches = benchmark.baseline_switches({"temperature": None})
    assert switches == ["optim.separate_logprob_pass=true", "optim.share_prompt_prefix=false"]
    assert (
        benchmark.baseline_switches({"share_prompt_prefix": None})[-1]
        == "generation.share_prompt_prefix=false"
    )
    optim = load_config("cpu-coder", benchmark.baseline_switches()).optim
    assert optim.separate_logprob_pass and not optim.share_prompt_prefix and optim.recompute_logprobs


def test_normalised_cost_is_seconds_times_gflops_over_1000(benchmark: ModuleType) -> None:
    assert benchmark.normalised_cost(540.0, 99.0) == pytest.approx(53.46)


def test_rows_set_each_measure_before_and_now(benchmark: ModuleType) -> None:
    def run(update_seconds: float, positions: int) -> object:
        metrics = {
            "time/propose": 10.0,
            "time/update": update_seconds,
            "time/step": 10.0 + update_seconds,
            "update/sequence_tokens": 1000,
            "update/tokens": 100,
            "update/forward_positions": positions,
            "tokens_per_s/update": 1000 / update_seconds,
            "tokens/generated": 50,
            "tokens_per_s/generation": 5.0,
        }
        return benchmark.StepRun(metrics, setup_seconds=3.0)

    rows = {row[0]: row[1:] for row in benchmark.comparison_rows(run(30.0, 1100), run(10.0, 600), 100.0)}
    assert rows["update s"] == ("30.0", "10.0", "0.33x")
    assert rows["step s"] == ("40.0", "20.0", "0.50x")
    assert rows["update: positions forwarded"] == ("1100", "600", "0.55x")
    assert rows["machine-normalised step cost"] == ("4.0", "2.0", "0.50x")


def test_compare_runs_both_steps(
    benchmark: ModuleType, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = [
        item for setting in [f"model.path={tiny_model_dir}", *TINY_SETTINGS] for item in ("--set", setting)
    ]
    benchmark.main(["--compare", "--config", "tiny-cpu", *sets])
    printed = capsys.readouterr().out
    for measure in ("update s", "update: positions forwarded", "machine-normalised step cost", "GFLOP/s"):
        assert measure in printed
