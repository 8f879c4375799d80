"""The prepared GPU check: what one lent GPU measures in one run of under 8 minutes.

1. Rollouts: generated tokens/s of every backend in `azr.engines.BACKENDS` (those that cannot run here are
   listed with the reason) on random-weight Qwen2.5-0.5B- and Qwen2.5-3B-shaped models (built from a
   `Qwen2Config`, saved and loaded with `load_policy` as any model), at two batch sizes, every response
   forced to the same length (no stop strings; the EOS ids are 2 of 151,936, so almost never sampled: the
   rows they ended are counted). Each beside its roofline: the call's fewest possible seconds on this
   device, the prompt pass and every decode step each taking the longer of its bytes (bf16 weights + the
   KV cache read) over the measured copy bandwidth and its FLOPs over the measured bf16 matmul rate.
2. Where a decode step's time goes: a `torch.profiler` trace of 20 decode steps of the transformers backend
   (a 1-token call subtracted from a 21-token one), the device's busy time against the step's wall time,
   kernel launches and host synchronisations per step.
3. One policy update on the 3B shape (recomputed log-probs, PPO-clip, AdamW), twice: tokens/s, peak memory.
4. 3 steps of `azr train` (the tiny-cpu preset on the GPU, bf16 autocast) on the 0.5B-shaped model, seconds
   per phase from the run's metrics.

Sections run in that order under one time budget: each later section keeps a reserve, and a rollout
measurement whose predicted time (from a short probe call) would eat into it is skipped with the reason.
A section that fails is recorded with its error and the others still run. Prints rich tables and writes
every number, with the GPU's name and the library versions, to `--out` (rewritten after every section).

    bash benchmarks/gpu_check.sh                                       # on the lent GPU: wheels, then this
    python3 benchmarks/gpu_check.py --tokenizer .whl/tokenizer --out gpu_check.json
    .venv/bin/python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check.json   # CPU, tiny shapes, seconds
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from rich.console import Console
from rich.table import Table
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, Qwen2Config

from azr.config import GenerationConfig, OptimConfig
from azr.engines import BACKENDS, GenerationBackend, SamplingParams, make_backend
from azr.policy import Policy, load_policy, named_model_path
from azr.run_dir import RunDir
from azr.update import TrainingSequence, make_optimizer, policy_update

QWEN25 = {"vocab_size": 151936, "max_position_embeddings": 32768, "tie_word_embeddings": True}
SHAPES = {
    "qwen2.5-0.5b": {
        **QWEN25,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
    },
    "qwen2.5-3b": {
        **QWEN25,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
    },
}
TINY = {"vocab_size": 49152, "max_position_embeddings": 4096, "tie_word_embeddings": True}
TINY_SHAPES = {
    "tiny-a": {**TINY, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    | {"num_attention_heads": 4, "num_key_value_heads": 2},
    "tiny-b": {**TINY, "hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 3}
    | {"num_attention_heads": 6, "num_key_value_heads": 2},
}
GROUPS = [f"{t}/{r}" for t in ("deduction", "abduction", "induction") for r in ("propose", "solve")]
LAUNCH_CALLS = (
    "cudaLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cudaGraphLaunch",
)
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
COPY_CALLS = ("cudaMemcpyAsync", "cudaMemcpy")
BF16_BYTES = 2  # the roofline's weights and KV cache are bf16, the fastest form any backend keeps them in


@dataclass(frozen=True)
class Plan:
    """What the check runs; recorded whole in its JSON."""

    device: str
    dtype: str  # the policy's compute dtype (`load_policy`)
    shapes: dict[str, dict[str, int]]
    batches: dict[str, tuple[int, ...]]  # per shape
    prompt_tokens: int
    response_tokens: int
    probe_tokens: int  # the timed probe call that predicts a measurement's seconds
    profile_shape: str
    profile_batch: int
    profile_steps: int
    update_shape: str
    update_sequences: int
    update_micro_batch: int
    update_steps: int
    train_shape: str
    train_steps: int
    train_settings: tuple[str, ...]  # `--set` overrides of the tiny-cpu preset
    copy_bytes: int  # buffer of the bandwidth measurement
    matmul_size: int
    budget_s: float
    reserves_s: dict[str, float] = field(default_factory=dict)  # kept back for the sections after rollouts


GPU_PLAN = Plan(
    device="cuda",
    dtype="bfloat16",
    shapes=SHAPES,
    batches={"qwen2.5-0.5b": (64, 256), "qwen2.5-3b": (32, 128)},
    prompt_tokens=256,
    response_tokens=256,
    probe_tokens=16,
    profile_shape="qwen2.5-0.5b",
    profile_batch=64,
    profile_steps=20,
    update_shape="qwen2.5-3b",
    update_sequences=64,
    update_micro_batch=8,
    update_steps=2,
    train_shape="qwen2.5-0.5b",
    train_steps=3,
    train_settings=(
        "device=cuda",
        "model.dtype=bfloat16",
        "logging.tensorboard=false",
        "executor.workers=8",
        "checkpoint.every_steps=3",
    ),
    copy_bytes=4 * 2**30,
    matmul_size=8192,
    budget_s=420.0,
    reserves_s={"profile": 30.0, "update": 45.0, "train": 150.0},
)
TINY_PLAN = Plan(
    device="cpu",
    dtype="float32",
    shapes=TINY_SHAPES,
    batches={"tiny-a": (2, 4), "tiny-b": (2, 4)},
    prompt_tokens=8,
    response_tokens=4,
    probe_tokens=2,
    profile_shape="tiny-a",
    profile_batch=2,
    profile_steps=20,
    update_shape="tiny-b",
    update_sequences=6,
    update_micro_batch=3,
    update_steps=2,
    train_shape="tiny-a",
    train_steps=3,
    train_settings=(
        "device=cpu",
        "model.dtype=float32",
        "logging.tensorboard=false",
        "selfplay.batch_size=2",
        "selfplay.learnability_samples=2",
        "selfplay.references=2",
        "selfplay.seed_file=null",
        "generation.propose_max_new_tokens=24",
        "generation.solve_max_new_tokens=12",
        "executor.workers=2",
        "executor.timeout_s=1.0",
        "checkpoint.every_steps=3",
    ),
    copy_bytes=64 * 2**20,
    matmul_size=256,
    budget_s=600.0,
)


# timing and the device's ceilings


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, run: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Seconds of `run(*args, **kwargs)` with the device's queue drained before and after, and its result."""
    sync(device)
    started = time.perf_counter()
    result = run(*args, **kwargs)
    sync(device)
    return time.perf_counter() - started, result


def median_seconds(device: str, run: Callable[[], Any], repeats: int, warmups: int = 2) -> float:
    """Median seconds of `run()` over `repeats` timed calls after `warmups` untimed ones."""
    for _ in range(warmups):
        run()
    return statistics.median(timed(device, run)[0] for _ in range(repeats))


def copy_bandwidth(device: str, nbytes: int) -> float:
    """Bytes per second of a device-to-device copy, counting bytes read and bytes written."""
    source = torch.rand(nbytes // 4, device=device)
    target = torch.empty_like(source)
    return 2 * nbytes / median_seconds(device, functools.partial(target.copy_, source), repeats=10)


def matmul_rate(device: str, size: int, dtype: torch.dtype) -> float:
    """FLOP per second of a square matrix product on random data (zeros would run faster)."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    return 2 * size**3 / median_seconds(device, functools.partial(torch.mm, a, b), repeats=10, warmups=3)


def environment(device: str) -> dict[str, Any]:
    import peft

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": device,
    }
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        facts |= {
            "gpu": torch.cuda.get_device_name(0),
            "gpu_memory_gb": properties.total_memory / 1e9,
            "multiprocessors": properties.multi_processor_count,
            "cuda": torch.version.cuda,
        }
    else:
        facts |= {
            "cpu_threads": torch.get_num_threads(),
            "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        }
    return facts


# the roofline


@dataclass(frozen=True)
class ModelCosts:
    """What one token costs a decoder: the bytes it must read and the FLOPs it must do."""

    weight_bytes: int  # read once per forward pass (the input embedding only where it is the LM head too)
    body_params: int  # multiply-adds per token in the decoder's layers
    head_params: int  # multiply-adds per token in the LM head
    kv_bytes_per_token: int  # keys and values of one position, every layer
    attention_flops_per_context_token: int  # QK and PV of one query against one cached position, every layer

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelCosts:
        config = model.config
        embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        tied = embedding.data_ptr() == head.data_ptr()
        params = sum(p.numel() for p in model.parameters())  # a tied matrix is listed once
        read = params - (0 if tied else embedding.numel())  # an untied embedding is only gathered from
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        layers = config.num_hidden_layers
        return cls(
            weight_bytes=read * BF16_BYTES,
            body_params=read - head.numel(),
            head_params=head.numel(),
            kv_bytes_per_token=2 * layers * config.num_key_value_heads * head_dim * BF16_BYTES,
            attention_flops_per_context_token=4 * layers * config.num_attention_heads * head_dim,
        )


def roofline_seconds(
    costs: ModelCosts,
    batch: int,
    prompt_tokens: int,
    response_tokens: int,
    bandwidth: float,
    flop_rate: float,
) -> tuple[float, float]:
    """(seconds, share of them bound by memory bandwidth) of the fastest possible generation call: one
    prompt pass (the layers on every prompt position, the LM head on the last only) and
    `response_tokens - 1` decode steps, each as long as the longer of its bytes over `bandwidth` and its
    FLOPs over `flop_rate`."""
    attention = costs.attention_flops_per_context_token
    prompt_flops = 2 * batch * (prompt_tokens * costs.body_params + costs.head_params)
    prompt_flops += batch * attention * prompt_tokens * (prompt_tokens + 1) // 2
    prompt_bytes = costs.weight_bytes + batch * prompt_tokens * costs.kv_bytes_per_token
    steps = [(prompt_bytes / bandwidth, prompt_flops / flop_rate)]
    for generated in range(1, response_tokens):
        context = prompt_tokens + generated
        step_bytes = costs.weight_bytes + batch * context * costs.kv_bytes_per_token
        step_flops = batch * (2 * (costs.body_params + costs.head_params) + attention * context)
        steps.append((step_bytes / bandwidth, step_flops / flop_rate))
    total = sum(max(memory, compute) for memory, compute in steps)
    memory_bound = sum(memory for memory, compute in steps if memory >= compute)
    return total, memory_bound / total


# models and prompts


def load_random_policy(directory: Path, shape: str, tokenizer: PreTrainedTokenizerBase, plan: Plan) -> Policy:
    """A random-weight Qwen2 model of `shape` (built on the device, in bf16 on a GPU), saved with
    `tokenizer` and loaded back as any policy is (fp32 weights, `plan.dtype` compute)."""
    config = Qwen2Config(
        **plan.shapes[shape],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(plan.device):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.bfloat16 if plan.device == "cuda" else None
        )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    free_memory(plan.device)
    return load_policy(directory, dtype=plan.dtype, gradient_checkpointing=True, device=plan.device)


def fixed_length_prompts(tokenizer: PreTrainedTokenizerBase, count: int, tokens: int) -> list[str]:
    """`count` different prompts of random words that are one token each, so each is `tokens` tokens long
    (the measured lengths are what the roofline uses)."""
    decoded = tokenizer.batch_decode([[i] for i in range(min(len(tokenizer), 20000))])
    words = [text for text in decoded if re.fullmatch(r" [a-z]{3,12}", text)]
    if len(words) < 100:
        raise ValueError("the tokenizer has too few single-token words (' word') to build prompts from")
    rng = random.Random(0)
    return ["".join(rng.choices(words, k=tokens)) for _ in range(count)]


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


# 1. rollouts


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def measure_rollouts(
    policy: Policy, shape: str, prompts: list[str], plan: Plan, bounds: dict[str, float], deadline: float
) -> list[dict[str, Any]]:
    """Every backend at every batch size of `shape`, forced-length responses, beside the roofline; a
    backend that cannot run here gets one row with the reason."""
    rows: list[dict[str, Any]] = []
    for name in BACKENDS:
        config = GenerationConfig(backend=name, max_batch_size=max(plan.batches[shape]))
        try:
            build_s, backend = timed(plan.device, make_backend, config, policy, seed=0)
        except (ImportError, ValueError) as error:  # not installed here, or not for this device
            rows.append({"shape": shape, "backend": name, "skipped": first_line(error)})
            continue
        rows += measure_backend(backend, policy, shape, prompts, plan, bounds, deadline, name, build_s)
        free_memory(plan.device)
    return rows


def measure_backend(
    backend: GenerationBackend,
    policy: Policy,
    shape: str,
    prompts: list[str],
    plan: Plan,
    bounds: dict[str, float],
    deadline: float,
    name: str,
    build_s: float,
) -> list[dict[str, Any]]:
    costs = ModelCosts.of(policy.model)
    full = SamplingParams(temperature=1.0, max_new_tokens=plan.response_tokens)
    rows = []
    for batch in plan.batches[shape]:
        row: dict[str, Any] = {"shape": shape, "backend": name, "batch": batch, "build_s": build_s}
        rows.append(row)
        batch_prompts = prompts[:batch]
        row["warmup_s"], _ = timed(plan.device, generate, backend, batch_prompts, 2)
        probe_s, _ = timed(plan.device, generate, backend, batch_prompts, plan.probe_tokens)
        predicted = probe_s / plan.probe_tokens * plan.response_tokens
        left = deadline - time.perf_counter()
        if predicted > left:
            row["skipped"] = f"predicted {predicted:.0f} s, {max(left, 0):.0f} s left"
            continue
        reset_peak(plan.device)
        seconds, completions = timed(plan.device, backend.generate, batch_prompts, full, seed=1)
        prompt_tokens = statistics.mean(len(c.prompt_ids) for c in completions)
        generated = sum(len(c.response_ids) for c in completions)
        bound_s, memory_share = roofline_seconds(
            costs,
            batch,
            round(prompt_tokens),
            plan.response_tokens,
            bounds["copy_bytes_per_s"],
            bounds["matmul_flop_per_s"],
        )
        roofline = batch * plan.response_tokens / bound_s
        row |= {
            "prompt_tokens": prompt_tokens,
            "response_tokens": plan.response_tokens,
            "seconds": seconds,
            "generated_tokens": generated,
            "rows_ended_early": sum(c.finish_reason != "length" for c in completions),
            "tokens_per_s": generated / seconds,
            "roofline_tokens_per_s": roofline,
            "roofline_memory_bound_share": memory_share,
            "of_roofline": generated / seconds / roofline,
            "peak_memory_gb": peak_gb(plan.device),
        }
    sync_s, _ = timed(plan.device, backend.update_weights, policy.model)
    return [row | {"weight_sync_s": sync_s} for row in rows]


def generate(backend: GenerationBackend, prompts: Sequence[str], tokens: int) -> None:
    backend.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=tokens), seed=0)


# 2. host and device time of decode steps


def covered_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length the intervals cover, overlaps counted once (how long a device was busy)."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def trace_totals(device: str, run: Callable[[], Any]) -> dict[str, float]:
    """Device busy microseconds, kernel microseconds, launches, synchronisations and copies of `run()`."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as trace:
        run()
        sync(device)
    events = trace.events()
    on_device = [e for e in events if e.device_type == DeviceType.CUDA]
    calls = [e.name for e in events]
    return {
        "device_busy_us": covered_length((e.time_range.start, e.time_range.end) for e in on_device),
        "kernel_us": sum(e.time_range.elapsed_us() for e in on_device),
        "launches": sum(calls.count(name) for name in LAUNCH_CALLS),
        "syncs": sum(calls.count(name) for name in SYNC_CALLS),
        "copies": sum(calls.count(name) for name in COPY_CALLS),
        "top_host_ops": [
            (op.key, op.self_cpu_time_total, op.count)
            for op in sorted(trace.key_averages(), key=lambda op: -op.self_cpu_time_total)[:6]
        ],
    }


def profile_decode(policy: Policy, prompts: list[str], plan: Plan) -> dict[str, Any]:
    """Per decode step of the transformers backend: wall time (unprofiled), the device's busy time, and
    the host's calls, from a 1-token call subtracted from a (1 + steps)-token call on the same prompts."""
    backend = make_backend(
        GenerationConfig(backend="transformers", max_batch_size=plan.profile_batch), policy
    )
    batch = prompts[: plan.profile_batch]
    steps = plan.profile_steps

    def call(tokens: int) -> Callable[[], None]:
        return functools.partial(generate, backend, batch, tokens)

    wall_1 = median_seconds(plan.device, call(1), repeats=3, warmups=1)
    wall_n = median_seconds(plan.device, call(1 + steps), repeats=3, warmups=1)
    one, many = trace_totals(plan.device, call(1)), trace_totals(plan.device, call(1 + steps))
    per_step = {
        key: (many[key] - one[key]) / steps
        for key in ("device_busy_us", "kernel_us", "launches", "syncs", "copies")
    }
    wall_us = (wall_n - wall_1) / steps * 1e6
    on_gpu = plan.device == "cuda"
    return {
        "batch": plan.profile_batch,
        "prompt_tokens": plan.prompt_tokens,
        "decode_steps": steps,
        "wall_us_per_step": wall_us,
        "device_busy_us_per_step": per_step["device_busy_us"] if on_gpu else None,
        "kernel_us_per_step": per_step["kernel_us"] if on_gpu else None,
        "device_idle_share": 1 - per_step["device_busy_us"] / wall_us if on_gpu else None,
        "kernel_launches_per_step": per_step["launches"],
        "host_syncs_per_step": per_step["syncs"],
        "memcpy_calls_per_step": per_step["copies"],
        "top_host_ops_in_the_long_call": many["top_host_ops"],
    }


# 3. the policy update


def measure_update(
    policy: Policy, prompts: list[str], plan: Plan, bounds: dict[str, float]
) -> dict[str, Any]:
    """`policy_update` on sequences of the rollout lengths with random responses and rewards."""
    rng = random.Random(1)
    vocab = policy.model.config.vocab_size
    sequences = [
        TrainingSequence(
            GROUPS[i % len(GROUPS)],
            policy.tokenizer(prompts[i % len(prompts)]).input_ids,
            [rng.randrange(3, vocab) for _ in range(plan.response_tokens)],
            [0.0] * plan.response_tokens,
            rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0]),
        )
        for i in range(plan.update_sequences)
    ]
    optim = OptimConfig(
        micro_batch_size=plan.update_micro_batch, logprob_chunk_size=512, recompute_logprobs=True
    )
    optimizer = make_optimizer(policy, optim)
    tokens = sum(len(s.prompt_ids) + len(s.response_ids) for s in sequences)
    costs = ModelCosts.of(policy.model)
    # 6 FLOPs per parameter per token (forward and backward), the usual utilisation count; checkpointing's
    # recomputed forward is extra work it does not credit.
    flops = 6 * (costs.body_params + costs.head_params) * tokens
    steps = []
    for _ in range(plan.update_steps):
        reset_peak(plan.device)
        seconds, _ = timed(plan.device, policy_update, policy, optimizer, sequences, optim)
        steps.append(
            {
                "seconds": seconds,
                "tokens_per_s": tokens / seconds,
                "model_flops_utilisation": flops / seconds / bounds["matmul_flop_per_s"],
                "peak_memory_gb": peak_gb(plan.device),
            }
        )
    del optimizer
    free_memory(plan.device)
    return {
        "sequences": len(sequences),
        "tokens": tokens,
        "micro_batch": plan.update_micro_batch,
        "steps": steps,
    }


# 4. azr train


def run_train(model_dir: Path, run_dir: Path, plan: Plan, timeout_s: float) -> dict[str, Any]:
    """`azr train` with the tiny-cpu preset and `plan.train_settings`, in its own process."""
    settings = [item for setting in plan.train_settings for item in ("--set", setting)]
    command = [sys.executable, "-m", "azr", "train", "--config", "tiny-cpu", "--model", str(model_dir)]
    command += ["--steps", str(plan.train_steps), "--run-dir", str(run_dir), *settings]
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        returncode, output = completed.returncode, completed.stdout + completed.stderr
    except subprocess.TimeoutExpired as expired:
        # What the killed process had printed comes back as bytes whatever `text` said.
        printed = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else ""
        returncode, output = None, f"killed after {timeout_s:.0f} s\n{printed}"
    wall = time.perf_counter() - started
    records = RunDir(run_dir).read_metrics() if (run_dir / "metrics.jsonl").is_file() else []
    keys = ("propose", "check", "solve", "judge", "update", "step")
    steps = [
        {key: record.get(f"time/{key}") for key in keys}
        | {
            "generated_tokens": record.get("tokens/generated"),
            "generation_tokens_per_s": record.get("tokens_per_s/generation"),
            "update_tokens_per_s": record.get("tokens_per_s/update"),
        }
        for record in records
    ]
    backend = RunDir.open(run_dir)[1].generation.backend if (run_dir / "config.yaml").is_file() else None
    return {
        "command": " ".join(command[1:]),
        "returncode": returncode,
        "wall_s": wall,
        "outside_steps_s": wall - sum(step["step"] or 0.0 for step in steps),
        "backend": backend,
        "steps": steps,
        "output_tail": output[-2000:] if returncode != 0 else "",
    }


# the run


class Results:
    """The check's numbers, rewritten to `path` after every section, so a kill loses only the last one."""

    def __init__(self, path: Path, plan: Plan):
        self.path = path
        self.data: dict[str, Any] = {"plan": asdict(plan), "errors": {}}
        self.failed = False

    def section(self, name: str, run: Callable[..., Any], *args: Any, record: bool = True) -> Any:
        """`run(*args)`'s value (kept under `name` if `record`), or None if it raised (its error is kept)."""
        started = time.perf_counter()
        try:
            value = run(*args)
        # A lent GPU runs this once: one section's failure must not cost the numbers of the others.
        except Exception:
            self.data["errors"][name] = traceback.format_exc(limit=-4)
            self.failed = True
            value = None
        self.data.setdefault("section_seconds", {})[name] = time.perf_counter() - started
        if record and value is not None:
            self.data[name] = value
        self.write()
        return value

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_suffix(".partial")
        staging.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        staging.replace(self.path)


def run_check(plan: Plan, tokenizer_dir: Path, out: Path, console: Console) -> int:
    started = time.perf_counter()
    results = Results(out, plan)
    results.data["environment"] = environment(plan.device)
    bounds = results.section("bounds", measure_bounds, plan)
    print_environment(console, results.data["environment"], bounds)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    prompts = fixed_length_prompts(tokenizer, max(max(b) for b in plan.batches.values()), plan.prompt_tokens)
    rollouts_end = started + plan.budget_s - sum(plan.reserves_s.values())
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        for index, shape in enumerate(plan.shapes):
            # Each shape's rollouts get an equal share of what is left of their time.
            deadline = time.perf_counter() + (rollouts_end - time.perf_counter()) / (len(plan.shapes) - index)
            check_shape(results, shape, Path(folder) / shape, tokenizer, prompts, plan, bounds, deadline)
            free_memory(plan.device)
        timeout = max(started + plan.budget_s - time.perf_counter(), 60.0)
        model_dir, run_dir = Path(folder) / plan.train_shape, Path(folder) / "run"
        results.section("train", run_train, model_dir, run_dir, plan, timeout)
    results.data["total_s"] = time.perf_counter() - started
    results.write()
    print_results(console, results.data)
    console.print(f"wrote {out} ({results.data['total_s']:.0f} s)")
    return 1 if results.failed else 0


def check_shape(
    results: Results,
    shape: str,
    model_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    plan: Plan,
    bounds: dict[str, float],
    deadline: float,
) -> None:
    """The rollouts on one model shape, and the profile and the update where the plan puts them."""
    policy = results.section(
        f"load/{shape}", load_random_policy, model_dir, shape, tokenizer, plan, record=False
    )
    if policy is None:
        return
    arguments = (policy, shape, prompts, plan, bounds, deadline)
    rows = results.section(f"rollouts/{shape}", measure_rollouts, *arguments, record=False)
    results.data.setdefault("rollouts", []).extend(rows or [])
    results.write()
    if shape == plan.profile_shape:
        results.section("profile", profile_decode, policy, prompts, plan)
    if shape == plan.update_shape:
        results.section("update", measure_update, policy, prompts, plan, bounds)
    if shape != plan.train_shape:
        shutil.rmtree(model_dir)


def measure_bounds(plan: Plan) -> dict[str, float]:
    dtype = torch.bfloat16 if plan.device == "cuda" else torch.float32
    return {
        "copy_bytes_per_s": copy_bandwidth(plan.device, plan.copy_bytes),
        "matmul_flop_per_s": matmul_rate(plan.device, plan.matmul_size, dtype),
        "matmul_dtype": str(dtype).removeprefix("torch."),
    }


# tables


def print_environment(console: Console, facts: dict[str, Any], bounds: dict[str, Any] | None) -> None:
    table = Table(title="machine")
    table.add_column("fact")
    table.add_column("value", justify="right")
    for key, value in facts.items():
        table.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
    if bounds:
        table.add_row("copy bandwidth (read + write)", f"{bounds['copy_bytes_per_s'] / 1e9:.0f} GB/s")
        table.add_row(f"{bounds['matmul_dtype']} matmul", f"{bounds['matmul_flop_per_s'] / 1e12:.1f} TFLOP/s")
    console.print(table)


def print_results(console: Console, data: dict[str, Any]) -> None:
    rollouts = Table(
        title="rollouts: generated tokens/s against the roofline (bf16 weights + KV bytes, matmul)"
    )
    for column in ("shape", "backend", "batch", "tok/s", "roofline tok/s", "of roofline", "HBM-bound"):
        rollouts.add_column(column, justify="right")
    for column in ("s", "warm-up s", "sync s", "peak GB", "ended early"):
        rollouts.add_column(column, justify="right")
    rollouts.add_column("skipped", max_width=60)
    for row in data.get("rollouts", []):
        if "skipped" in row:
            batch = str(row.get("batch", "-"))
            rollouts.add_row(
                row["shape"], row["backend"], batch, *["-"] * 9, textwrap.shorten(row["skipped"], 60)
            )
            continue
        rollouts.add_row(
            row["shape"],
            row["backend"],
            str(row["batch"]),
            f"{row['tokens_per_s']:,.0f}",
            f"{row['roofline_tokens_per_s']:,.0f}",
            f"{row['of_roofline']:.1%}",
            f"{row['roofline_memory_bound_share']:.0%}",
            f"{row['seconds']:.1f}",
            f"{row['warmup_s']:.1f}",
            f"{row['weight_sync_s']:.2f}",
            "-" if row["peak_memory_gb"] is None else f"{row['peak_memory_gb']:.1f}",
            str(row["rows_ended_early"]),
        )
    console.print(rollouts)
    if profile_data := data.get("profile"):
        table = Table(
            title=f"{profile_data['decode_steps']} decode steps, transformers backend, "
            f"batch {profile_data['batch']}"
        )
        table.add_column("per decode step")
        table.add_column("value", justify="right")
        for key, value in profile_data.items():
            if key not in ("batch", "decode_steps", "top_host_ops_in_the_long_call"):
                table.add_row(key, "-" if value is None else f"{value:,.2f}")
        for name, self_us, count in profile_data["top_host_ops_in_the_long_call"]:
            table.add_row(f"host op {name} (whole call, {count} calls)", f"{self_us:,.0f} us")
        console.print(table)
    if update := data.get("update"):
        table = Table(title=f"policy update: {update['sequences']} sequences, {update['tokens']} tokens")
        for column in ("step", "s", "tokens/s", "MFU", "peak GB"):
            table.add_column(column, justify="right")
        for i, step in enumerate(update["steps"], 1):
            peak = "-" if step["peak_memory_gb"] is None else f"{step['peak_memory_gb']:.1f}"
            table.add_row(
                str(i),
                f"{step['seconds']:.1f}",
                f"{step['tokens_per_s']:,.0f}",
                f"{step['model_flops_utilisation']:.1%}",
                peak,
            )
        console.print(table)
    if train := data.get("train"):
        table = Table(
            title=f"azr train ({train['backend']} backend): exit {train['returncode']}, "
            f"{train['wall_s']:.0f} s, {train['outside_steps_s']:.0f} s outside steps"
        )
        columns = ("propose", "check", "solve", "judge", "update", "step")
        for column in ("step", *(f"{c} s" for c in columns), "generated", "gen tok/s", "update tok/s"):
            table.add_column(column, justify="right")
        for i, step in enumerate(train["steps"], 1):
            cells = [f"{step[c]:.1f}" for c in columns]
            table.add_row(
                str(i),
                *cells,
                str(step["generated_tokens"]),
                f"{step['generation_tokens_per_s']:,.0f}",
                f"{step['update_tokens_per_s']:,.0f}",
            )
        console.print(table)
        if train["output_tail"]:
            console.print(train["output_tail"], markup=False)
    for name, error in data["errors"].items():
        console.print(f"[red]{name} failed:[/red]")
        console.print(error, markup=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny shapes on the CPU: checks the script in seconds"
    )
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="where the JSON goes")
    parser.add_argument(
        "--tokenizer", type=Path, help="a tokenizer directory (default: the embedded model's, converted here)"
    )
    parser.add_argument("--budget-s", type=float, help="seconds for the whole check (default: the plan's)")
    args = parser.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    plan = TINY_PLAN if args.tiny else GPU_PLAN
    if args.budget_s is not None:
        plan = replace(plan, budget_s=args.budget_s)
    if plan.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA GPU here; run it on a GPU machine (benchmarks/gpu_check.sh), or --tiny")
        return 2
    return run_check(plan, args.tokenizer or named_model_path("embedded"), args.out, Console(width=160))


if __name__ == "__main__":
    sys.exit(main())
