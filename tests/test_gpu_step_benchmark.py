"""benchmarks/gpu_step.py: its CPU smoke path runs and prints every measure; without a GPU it says so."""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.fixture
def benchmark(benchmark_script) -> ModuleType:
    return benchmark_script("gpu_step")


def test_tiny_cpu_step_prints_rollout_and_update_measures(
    benchmark: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--device", "cpu", "--tiny", "--sequences", "6", "--prompt-tokens", "8", "--response-tokens", "4"]
    assert benchmark.main([*args, "--micro-batch", "3"]) == 0
    printed = capsys.readouterr().out
    for measure in ("rollout (transformers) tokens/s", "update tokens/s", "peak memory in the update"):
        assert measure in printed


def test_without_a_gpu_it_says_so(benchmark: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert benchmark.main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().out
