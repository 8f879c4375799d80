"""Rollout speed of the generation backends on the same self-play prompts, side by side in one run.

Every backend gets the same prompts, sampling parameters and seed. Two calls can be measured:

- `--call step` (default): a step's proposer and solver prompts (completion format, built from the shipped
  seed tasks), temperature 1 and no stop strings, so every row decodes exactly `--new-tokens` tokens unless
  it samples EOS and all backends do comparable work. Prompt processing (a call with max_new_tokens=1) and
  decoding (the rest of a full call) are reported separately, in tokens/s.
- `--call solve`: the shape of a `cpu-coder` solve call: `--solver-prompts` solver prompts (one per type in
  turn) and the `--samples` learnability samples of each of `--tasks` tasks (n copies of one prompt), with
  the solver's stop strings and a `--new-tokens` budget (96 in cpu-coder). Reports the call's seconds and
  its generated tokens/s (the rows end where their stop strings or EOS fall, so the work differs a little
  between backends and trees).

Each backend's weight sync (`update_weights`, what every training step pays) is timed too. The machine's
bounds are measured in the same run: fp32 and bf16 matrix-multiply peaks (prompt processing is
compute-bound) and memory bandwidth (each decode step reads every weight once).

`--compare-tree DIR` also runs the same workload (built here, so the prompts are identical) with the engines
of another checkout (DIR/src first on the path), alternating with this checkout's runs `--repeats` times,
each run in a fresh process; the table gives each side's fastest run. The baseline of a change:

    git worktree add /tmp/azr-base HEAD     # before committing it; any commit works
    .venv/bin/python benchmarks/rollouts.py --call solve --backends transformers-int8 --batch-size 16 \\
        --compare-tree /tmp/azr-base --repeats 2
    .venv/bin/python benchmarks/rollouts.py --model qwen2.5-coder-0.5b --prompts 8 --new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

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

Workload = list[tuple[str, SamplingParams]]


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


def solve_workload(solver_prompts: int, tasks: int, samples: int, new_tokens: int, seed: int) -> Workload:
    """A cpu-coder solve call: solver prompts of the three types in turn, then `samples` copies of the
    solver prompt of each of `tasks` tasks, each with its type's stop strings (one solver example each)."""
    rng = random.Random(seed)
    fmt = get_format("completion")
    pools = {
        "io": load_seed_tasks(shipped_seed_path("io")),
        "induction": load_seed_tasks(shipped_seed_path("induction")),
    }
    types = [get_task_type(name) for name in ("deduction", "abduction", "induction")]
    workload: Workload = []
    for i in range(solver_prompts + tasks):
        task_type = types[i % 3]
        pool = pools["induction" if task_type.name == "induction" else "io"]
        task, example = rng.sample(pool, 2)
        prompt = task_type.solver_prompt(fmt, task, [example])
        params = SamplingParams(
            temperature=1.0, max_new_tokens=new_tokens, stop=tuple(task_type.stop(fmt, "solve"))
        )
        workload += [(prompt, params)] * (1 if i < solver_prompts else samples)
    return workload


def measure(
    model: str, backends: list[str], workload: Workload, batch_size: int, seed: int, split_prefill: bool
) -> list[dict]:
    """Time every backend on the workload: optionally a prompt-only call, then the full call and a sync."""
    policy = load_policy(model, device="cpu")
    prompts = [prompt for prompt, _ in workload]
    params = [p for _, p in workload]
    first_token = [SamplingParams(temperature=p.temperature, top_p=p.top_p, max_new_tokens=1) for p in params]
    prompt_tokens = sum(len(policy.tokenizer(p).input_ids) for p in prompts)
    weights = dict(policy.model.named_parameters())
    matmul_params = sum(p.numel() for name, p in weights.items() if p.dim() == 2 and "embed" not in name)
    weight_bytes = sum(p.numel() * p.element_size() for p in weights.values())
    results = []
    for name in backends:
        backend = make_backend(GenerationConfig(backend=name, max_batch_size=batch_size), policy)
        backend.generate(prompts[:1], SamplingParams(max_new_tokens=2), seed=0)  # warm-up
        prefill_s = None
        if split_prefill:
            started = time.perf_counter()
            backend.generate(prompts, first_token, seed=seed)
            prefill_s = time.perf_counter() - started
        started = time.perf_counter()
        completions = backend.generate(prompts, params, seed=seed)
        total_s = time.perf_counter() - started
        started = time.perf_counter()
        backend.update_weights(policy.model)
        sync_s = time.perf_counter() - started
        generated = sum(len(c.response_ids) for c in completions)
        results.append(
            {
                "backend": name,
                "prompt_tokens": prompt_tokens,
                "prefill_s": prefill_s,
                "total_s": total_s,
                "sync_s": sync_s,
                "generated": generated,
                "rows": len(completions),
                "matmul_params": matmul_params,
                "fp32_weight_bytes": weight_bytes,
            }
        )
        prefill = f"prefill {prefill_s:.1f}s, " if prefill_s is not None else ""
        print(
            f"{name}: {prefill}generate {total_s:.1f}s ({generated} tokens), sync {sync_s:.1f}s", flush=True
        )
        del backend
    return results


def measure_in_subprocess(
    tree: Path | None, args: argparse.Namespace, workload: Workload, split_prefill: bool
) -> list[dict]:
    """`measure` in a fresh process running this script: with the `azr` package of checkout `tree`, or of
    this one (None). Each side then starts from the same memory state, and two loaded models never share
    the machine's memory."""
    with tempfile.TemporaryDirectory() as scratch:
        workload_file, results_file = Path(scratch) / "workload.json", Path(scratch) / "results.json"
        workload_file.write_text(json.dumps([[prompt, asdict(p)] for prompt, p in workload]))
        command = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--backends",
            args.backends,
            "--batch-size",
            str(args.batch_size),
            "--seed",
            str(args.seed),
            "--workload-file",
            str(workload_file),
            "--results-file",
            str(results_file),
        ]
        if not split_prefill:
            command.append("--no-prefill-split")
        environment = dict(os.environ)
        if tree is not None:
            environment["PYTHONPATH"] = str(tree.resolve() / "src")
        subprocess.run(command, check=True, env=environment)
        return json.loads(results_file.read_text())


def tree_label(tree: Path) -> str:
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return f"{tree} ({commit or 'not a git checkout'})"


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


def print_table(runs: list[tuple[str, dict]], args: argparse.Namespace, workload: Workload) -> None:
    """One row per (backend, tree): its fastest run of the call, the first row the baseline; then the
    machine's bounds measured now."""
    fastest: dict[tuple[str, str], dict] = {}
    times: dict[tuple[str, str], list[float]] = {}
    for tree, result in runs:
        key = (result["backend"], tree)
        times.setdefault(key, []).append(result["total_s"])
        if key not in fastest or result["total_s"] < fastest[key]["total_s"]:
            fastest[key] = result
    fp32_peak, bf16_peak, bandwidth = (
        matmul_peak(torch.float32),
        matmul_peak(torch.bfloat16),
        memory_bandwidth(),
    )
    first = next(iter(fastest.values()))
    distinct = len({prompt for prompt, _ in workload})
    table = Table(
        title=f"rollouts ({args.call} call): {len(workload)} rows of {distinct} distinct "
        f"prompts ({first['prompt_tokens']} prompt tokens), up to {workload[0][1].max_new_tokens} new tokens "
        f"each, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    columns = ("backend", "engines", "prompt tok/s", "of matmul peak", "decode tok/s", "generated")
    for column in (*columns, "generate s", "runs s", "speed-up", "sync s", "generate+sync speed-up"):
        table.add_column(column, justify="right")
    for (name, tree), result in fastest.items():
        prefill_s = result["prefill_s"]
        peak = bf16_peak if "bf16" in name else None if "int8" in name else fp32_peak
        prefill_rate = result["prompt_tokens"] / prefill_s if prefill_s else None
        decoded = result["generated"] - (result["rows"] if prefill_s else 0)
        of_peak = "-"
        if prefill_rate:
            of_peak = f"{2 * result['matmul_params'] * prefill_rate / (peak * 1e9):.0%}" if peak else "(int8)"
        table.add_row(
            name,
            tree,
            f"{prefill_rate:.0f}" if prefill_rate else "-",
            of_peak,
            f"{decoded / max(result['total_s'] - (prefill_s or 0.0), 1e-9):.1f}",
            str(result["generated"]),
            f"{result['total_s']:.1f}",
            ", ".join(f"{t:.0f}" for t in times[(name, tree)]),
            f"{first['total_s'] / result['total_s']:.2f}x",
            f"{result['sync_s']:.1f}",
            f"{(first['total_s'] + first['sync_s']) / (result['total_s'] + result['sync_s']):.2f}x",
        )
    console = Console(width=max(Console().width, 160))
    console.print(table)
    weight_rate = bandwidth * 1e9 / first["fp32_weight_bytes"] * args.batch_size
    console.print(
        f"machine: fp32 matmul {fp32_peak:.0f} GFLOP/s, bf16 matmul {bf16_peak:.0f} GFLOP/s, copy bandwidth "
        f"{bandwidth:.1f} GB/s; decode bound (weights read once per step, batch {args.batch_size}): fp32 "
        f"{weight_rate:.0f} tok/s, bf16 {2 * weight_rate:.0f} tok/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="qwen2.5-coder-0.5b", help=f"a named model ({', '.join(MODELS)}) or a directory"
    )
    parser.add_argument("--backends", default="transformers,transformers-bf16,transformers-int8")
    parser.add_argument("--call", choices=("step", "solve"), default="step")
    parser.add_argument("--prompts", type=int, default=8, help="step call: prompts")
    parser.add_argument("--solver-prompts", type=int, default=12, help="solve call: solver prompts")
    parser.add_argument("--tasks", type=int, default=4, help="solve call: tasks with learnability samples")
    parser.add_argument("--samples", type=int, default=8, help="solve call: learnability samples per task")
    parser.add_argument("--new-tokens", type=int, help="token budget per row (step: 64, solve: 96)")
    parser.add_argument("--batch-size", type=int, default=8, help="generation.max_batch_size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-tree", type=Path, help="also run the engines of this checkout")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side (alternating)")
    parser.add_argument("--no-prefill-split", action="store_true", help="skip the prompt-only call")
    parser.add_argument("--workload-file", type=Path, help=argparse.SUPPRESS)  # --compare-tree's subprocess
    parser.add_argument("--results-file", type=Path, help=argparse.SUPPRESS)
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
    backends = args.backends.split(",")
    split_prefill = args.call == "step" and not args.no_prefill_split
    if args.workload_file is not None:
        workload = [
            (prompt, SamplingParams(**{**p, "stop": tuple(p["stop"])}))
            for prompt, p in json.loads(args.workload_file.read_text())
        ]
        results = measure(
            args.model, backends, workload, args.batch_size, args.seed, not args.no_prefill_split
        )
        args.results_file.write_text(json.dumps(results))
        return

    if args.call == "step":
        full = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens or 64)
        workload = [(prompt, full) for prompt in step_prompts(args.prompts, args.seed)]
    else:
        workload = solve_workload(
            args.solver_prompts, args.tasks, args.samples, args.new_tokens or 96, args.seed
        )
    runs: list[tuple[str, dict]] = []
    for _ in range(args.repeats):
        if args.compare_tree is None:
            results = measure(args.model, backends, workload, args.batch_size, args.seed, split_prefill)
        else:
            label = tree_label(args.compare_tree)
            runs += [
                (label, r) for r in measure_in_subprocess(args.compare_tree, args, workload, split_prefill)
            ]
            results = measure_in_subprocess(None, args, workload, split_prefill)
        runs += [("this checkout", r) for r in results]
    print_table(runs, args, workload)


if __name__ == "__main__":
    main()
