"""Shared fixtures: a tiny randomly initialised llama-style model with the real SmolLM2 tokenizer.

The tokenizer comes from the embedded model's cached conversion (`azr.policy.named_model_path`); the
first test session on a machine pays the one-off ~20 s conversion, every later one loads it in ~0.2 s.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from azr.engines.transformers_backend import TransformersBackend
    from azr.policy import Policy

# The tests share two cores with sandbox workers and other processes. OpenMP threads that spin while they
# wait turn that contention into 10-50x slower small matmuls (measured: 151 s vs 15 s for the policy and
# generation tests). libgomp reads this once when torch loads, so torch is imported only inside fixtures.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def benchmark_script() -> Callable[[str], ModuleType]:
    """Import a script of `benchmarks/` (not a package) by its name, e.g. `benchmark_script("gpu_check")`."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there while the class is built
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-64 llama model (random weights, seed 0) saved with `save_pretrained`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from azr.policy import named_model_path
    from tiny_models import save_random_model

    return save_random_model(
        tmp_path_factory.mktemp("tiny-llama"),
        named_model_path("embedded"),
        LlamaConfig,
        LlamaForCausalLM,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )


@pytest.fixture(scope="session")
def tiny_policy(tiny_model_dir: Path) -> Policy:
    """The tiny model loaded on CPU for full fine-tuning. Session-scoped: do not update its weights."""
    from azr.policy import load_policy

    return load_policy(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_backend(tiny_policy: Policy) -> TransformersBackend:
    """A transformers generation backend on `tiny_policy`."""
    from azr.engines.transformers_backend import TransformersBackend

    return TransformersBackend.from_policy(tiny_policy, max_batch_size=4)


@pytest.fixture
def kill_after_first_checkpoint() -> Callable[[subprocess.Popen, Path, float], None]:
    """SIGKILL a training job's whole process group `settle_s` seconds after its step-1 checkpoint is
    complete, so that the kill lands inside a later step. The job must run in its own session."""

    def kill(proc: subprocess.Popen, run_dir: Path, settle_s: float) -> None:
        first = run_dir / "checkpoints" / "step_000001" / "COMPLETE"
        deadline = time.monotonic() + 300
        while not first.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        time.sleep(settle_s)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    return kill
