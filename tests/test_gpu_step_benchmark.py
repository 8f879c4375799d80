"""benchmarks/gpu_step.py: its CPU smoke path runs and prints every measure; without a GPU it says so."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def load_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_step.py"
    spec = importlib.util.spec_from_file_location("gpu_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_step_prints_rollout_and_update_measures(capsys: pytest.CaptureFixture[str]) -> None:
    benchmark = load_benchmark()
    args = ["--device", "cpu", "--tiny", "--sequences", "6", "--prompt-tokens", "8", "--response-tokens", "4"]
    assert benchmark.main([*args, "--micro-batch", "3"]) == 0
    printed = capsys.readouterr().out
    for measure in ("rollout (transformers) tokens/s", "update tokens/s", "peak memory in the update"):
        assert measure in printed


def test_without_a_gpu_it_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert load_benchmark().main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().out
