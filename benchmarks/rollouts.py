"""Rollout speed of the generation backends on the same self-play prompts, side by side in one run.

Every backend gets the same prompts (a step's proposer prompts and solver prompts, completion format, built
from the shipped seed tasks), the same sampling parameters and the same seed. For each it reports prompt
processing (a call with max_new_tokens=1) and decoding (the rest of a full call) separately, in tokens/s,
and the cost of one weight sync (`update_weights`, what every training step pays). The machine's bounds
are measured in the same run: fp32 and bf16 matrix-multiply peaks for prompt processing (compute-bound)
and memory bandwidth for decoding (each decode step reads every weight once).

    .venv/bin/python benchmarks/rollouts.py --model qwen2.5-coder-0.5b --prompts 8 --new-tokens 64
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from rich.console import Console
from rich.table import Table

from azr.config import GenerationConfig
from azr.devices import bf16_is_native
from azr.engines import SamplingParams, make_backend
from azr.models import MODELS
from azr.policy import load_policy
from azr.prompts import get_format
from azr.tasks import get_task_type, load_seed_tasks, shipped_seed_path


def step_prompts(count: int, seed: int) -> list[str]:
    """Half proposer prompts (deduction, abduction, induction in turn), half solver prompts, as a step has."""
    rng = random.Random(seed)
    fmt = get_format("completion")
    io_tasks = load_seed_tasks(shipped_seed_path("io"))
    induction_tasks = load_seed_tasks(shipped_seed_path("induction"))
    types = [get_task_type(name) for name in ("deduction", "abduction", "induction")]
    prompts = []
    for i in range(count):
        task_type = types[i % 3]
        pool = induction_tasks if task_type.name == "induction" else io_tasks
        if i % 2 == 0:
            references = (
                [rng.choice(io_tasks), *rng.sample(pool, 2)]
                if task_type.name == "induction"
                else rng.sample(pool, 3)
            )
            prompts.append(task_type.proposer_prompt(fmt, references).text)
        else:
            prompts.append(task_type.solver_prompt(fmt, rng.choice(pool), rng.sample(pool, 2)))
    return prompts


def matmul_peak(dtype: torch.dtype, size: int = 1536, repeats: int = 6) -> float:
    """Measured GFLOP/s of a square matrix product in `dtype` on this machine."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def memory_bandwidth(gigabytes: float = 0.5) -> float:
    """Measured GB/s of reading and writing a large buffer (a copy counts its bytes twice)."""
    source = torch.empty(int(gigabytes * 2**30) // 4, dtype=torch.float32).fill_(1.0)
    target = torch.empty_like(source)
    target.copy_(source)
    started = time.perf_counter()
    for _ in range(3):
        target.copy_(source)
    return 3 * 2 * source.numel() * 4 / (time.perf_counter() - started) / 1e9


def print_bounds() -> None:
    fp32, bf16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    native = bf16_is_native(torch.device("cpu"))
    print(f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()} kernels")
    print(f"fp32 matmul {fp32:.1f} GFLOP/s, bf16 matmul {bf16:.1f} GFLOP/s ({bf16 / fp32:.2f}x fp32)")
    print(f"copy bandwidth {memory_bandwidth():.1f} GB/s")
    print(f"bf16 native here: {native}, so model.dtype auto -> {'bfloat16' if native else 'float32'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="qwen2.5-coder-0.5b", help=f"a named model ({', '.join(MODELS)}) or a directory"
    )
    parser.add_argument("--backends", default="transformers,transformers-bf16,transformers-int8")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bounds-only",
        action="store_true",
        help="only measure this CPU's fp32 and bf16 matmul peaks and copy bandwidth (seconds, no model), and "
        "say which compute dtype `model.dtype: auto` picks here",
    )
    args = parser.parse_args()
    if args.bounds_only:
        print_bounds()
        return

    policy = load_policy(args.model, device="cpu")
    prompts = step_prompts(args.prompts, args.seed)
    prompt_tokens = sum(len(policy.tokenizer(p).input_ids) for p in prompts)
    # Sampling at temperature 1 without stop strings: every row decodes exactly `new_tokens` tokens unless
    # it samples EOS, so all backends do comparable work.
    full = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens)
    first_token = SamplingParams(temperature=1.0, max_new_tokens=1)
    weights = {name: p for name, p in policy.model.named_parameters()}
    matmul_params = sum(p.numel() for name, p in weights.items() if p.dim() == 2 and "embed" not in name)

    rows = []
    for name in args.backends.split(","):
        backend = make_backend(GenerationConfig(backend=name, max_batch_size=args.batch_size), policy)
        backend.generate(prompts[:1], SamplingParams(max_new_tokens=2), seed=0)  # warm-up
        started = time.perf_counter()
        backend.generate(prompts, first_token, seed=args.seed)
        prefill_s = time.perf_counter() - started
        started = time.perf_counter()
        completions = backend.generate(prompts, full, seed=args.seed)
        total_s = time.perf_counter() - started
        started = time.perf_counter()
        backend.update_weights(policy.model)
        sync_s = time.perf_counter() - started
        decode_tokens = sum(len(c.response_ids) for c in completions) - len(prompts)
        rows.append((name, prefill_s, total_s, sync_s, decode_tokens))
        print(f"{name}: prefill {prefill_s:.1f}s, generate {total_s:.1f}s, sync {sync_s:.1f}s", flush=True)
        del backend

    fp32_peak, bf16_peak, bandwidth = (
        matmul_peak(torch.float32),
        matmul_peak(torch.bfloat16),
        memory_bandwidth(),
    )
    baseline_total, baseline_sync = rows[0][2], rows[0][3]
    table = Table(
        title=f"rollouts: {len(prompts)} prompts ({prompt_tokens} prompt tokens), up to {args.new_tokens} "
        f"new tokens each, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    columns = ("backend", "prompt tok/s", "of matmul peak", "decode tok/s", "generate s", "speed-up")
    for column in (*columns, "sync s", "generate+sync speed-up"):
        table.add_column(column, justify="right")
    for name, prefill_s, total_s, sync_s, decode_tokens in rows:
        peak = bf16_peak if "bf16" in name else None if "int8" in name else fp32_peak
        prefill_rate = prompt_tokens / prefill_s
        table.add_row(
            name,
            f"{prefill_rate:.0f}",
            f"{2 * matmul_params * prefill_rate / (peak * 1e9):.0%}" if peak else "(int8 kernels)",
            f"{decode_tokens / max(total_s - prefill_s, 1e-9):.1f}",
            f"{total_s:.1f}",
            f"{baseline_total / total_s:.2f}x",
            f"{sync_s:.1f}",
            f"{(baseline_total + baseline_sync) / (total_s + sync_s):.2f}x",
        )
    console = Console()
    console.print(table)
    weight_bytes = {name: sum(p.numel() * p.element_size() for p in weights.values()) for name in ("fp32",)}[
        "fp32"
    ]
    console.print(
        f"machine: fp32 matmul {fp32_peak:.0f} GFLOP/s, bf16 matmul {bf16_peak:.0f} GFLOP/s, copy bandwidth "
        f"{bandwidth:.1f} GB/s; decode bound (weights read once per step, batch {args.batch_size}): fp32 "
        f"{bandwidth * 1e9 / weight_bytes * args.batch_size:.0f} tok/s, bf16 "
        f"{2 * bandwidth * 1e9 / weight_bytes * args.batch_size:.0f} tok/s"
    )


if __name__ == "__main__":
    main()
