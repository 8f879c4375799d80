"""benchmarks/gpu_check.py: its roofline and trace arithmetic, its time budget, and the whole check on the
CPU (`--tiny`): every section runs and lands in the JSON; without a GPU the real check says so."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def check(benchmark_script) -> ModuleType:
    return benchmark_script("gpu_check")


def test_covered_length_counts_overlapping_intervals_once(check: ModuleType) -> None:
    assert check.covered_length([]) == 0
    assert check.covered_length([(5, 6), (0, 2), (1, 3)]) == 4
    assert check.covered_length([(0, 10), (2, 3), (9, 12)]) == 12


def test_model_costs_count_a_tied_head_once_and_skip_an_untied_embedding(check: ModuleType) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = check.TINY_SHAPES["tiny-a"] | {"vocab_size": 1000}
    for tied in (True, False):
        model = Qwen2ForCausalLM(Qwen2Config(**shape | {"tie_word_embeddings": tied}))
        costs = check.ModelCosts.of(model)
        params = sum(p.numel() for p in model.parameters())
        embedding = 1000 * shape["hidden_size"]
        assert costs.head_params == embedding
        assert costs.weight_bytes == 2 * (params if tied else params - embedding)
        assert costs.body_params == costs.weight_bytes // 2 - embedding
        head_dim = shape["hidden_size"] // shape["num_attention_heads"]
        assert costs.kv_bytes_per_token == 2 * shape["num_hidden_layers"] * 2 * head_dim * 2


def test_roofline_is_the_weight_reads_when_bandwidth_binds_and_the_flops_when_compute_does(
    check: ModuleType,
) -> None:
    costs = check.ModelCosts(
        weight_bytes=1000,
        body_params=300,
        head_params=200,
        kv_bytes_per_token=0,
        attention_flops_per_context_token=0,
    )
    # Every forward pass (the prompt pass and 7 decode steps) reads the weights once.
    seconds, memory_share = check.roofline_seconds(costs, 4, 16, 8, bandwidth=1000.0, flop_rate=1e30)
    assert seconds == pytest.approx(8.0)
    assert memory_share == 1.0
    # Compute-bound: the prompt pass does 2 * batch * (16 * body + head), each decode step 2 * batch * 500.
    seconds, memory_share = check.roofline_seconds(costs, 4, 16, 8, bandwidth=1e30, flop_rate=1.0)
    assert seconds == pytest.approx(2 * 4 * (16 * 300 + 200) + 7 * 2 * 4 * 500)
    assert memory_share == 0.0


def test_a_measurement_predicted_past_the_deadline_is_skipped_with_the_reason(
    check: ModuleType, tiny_policy
) -> None:
    prompts = check.fixed_length_prompts(tiny_policy.tokenizer, 4, 8)
    assert [len(tiny_policy.tokenizer(p).input_ids) for p in prompts] == [8] * 4
    bounds = {"copy_bytes_per_s": 1e10, "matmul_flop_per_s": 1e11}
    rows = check.measure_rollouts(
        tiny_policy, "tiny-a", prompts, check.TINY_PLAN, bounds, time.perf_counter()
    )
    measured = [row for row in rows if "batch" in row]  # the backends that could be built here
    assert {"transformers", "transformers-int8"} <= {row["backend"] for row in measured}
    assert all(row["skipped"].startswith("predicted") and "tokens_per_s" not in row for row in measured)


def test_a_train_run_past_its_time_is_killed_and_reported(check: ModuleType, tmp_path: Path) -> None:
    train = check.run_train(tmp_path / "model", tmp_path / "run", check.TINY_PLAN, timeout_s=0.5)
    assert train["returncode"] is None and train["steps"] == []
    assert train["output_tail"].startswith("killed after 0 s")


def test_tiny_check_runs_every_section_and_writes_them(
    check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "check.json"
    assert check.main(["--tiny", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["errors"] == {}
    assert data["environment"]["torch"] and data["environment"]["device"] == "cpu"
    assert data["bounds"]["copy_bytes_per_s"] > 0 and data["bounds"]["matmul_flop_per_s"] > 0

    for shape, batches in check.TINY_PLAN.batches.items():
        rows = {(row["backend"], row.get("batch")): row for row in data["rollouts"] if row["shape"] == shape}
        for backend in check.BACKENDS:
            skipped = rows.get((backend, None))
            if skipped is not None:  # a backend that cannot run here says why
                assert backend == "vllm" and "vLLM" in skipped["skipped"]
                continue
            for batch in batches:
                row = rows[(backend, batch)]
                forced = batch * check.TINY_PLAN.response_tokens
                assert (row["generated_tokens"] == forced) == (row["rows_ended_early"] == 0)
                assert row["prompt_tokens"] == check.TINY_PLAN.prompt_tokens
                assert row["tokens_per_s"] > 0 and row["roofline_tokens_per_s"] > 0

    profile = data["profile"]
    assert profile["decode_steps"] == check.TINY_PLAN.profile_steps and profile["wall_us_per_step"] > 0
    assert profile["device_idle_share"] is None  # no device on the CPU
    assert len(data["update"]["steps"]) == check.TINY_PLAN.update_steps
    assert all(step["tokens_per_s"] > 0 for step in data["update"]["steps"])

    train = data["train"]
    assert train["returncode"] == 0, train["output_tail"]
    assert len(train["steps"]) == check.TINY_PLAN.train_steps
    assert all(step["propose"] > 0 and step["update"] > 0 for step in train["steps"])

    printed = capsys.readouterr().out
    for title in ("machine", "rollouts", "decode steps", "policy update", "azr train"):
        assert title in printed


def test_without_a_gpu_the_real_check_says_so(check: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert check.main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().out
