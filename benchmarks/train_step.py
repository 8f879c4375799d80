"""One self-play step: where the time goes, throughput and peak memory; `--compare`: the step before
issue 17 and today's, side by side in one run.

Default: one step of the config, then the step's first generation done as one batched call over every
task type and role (azr) against one generate call per (type, role) phase, as the reference implementation
does. Same prompts, same sampling parameters, same seed.

`--compare`: the step as it was before issue 17, as far as switches give it (`BASELINE_SWITCHES`: a
separate no-grad pass scoring the behaviour log-probs, every sequence forwarded whole, and the engine's
prompt-prefix sharing off where the config has that switch; what changed without a switch is in both),
then the step as configured, each from a fresh trainer on the same config and
seed, `--steps` steps each, the last one reported. `--new-set` applies to the new step only (e.g. the
prompt switches `selfplay.shared_references=true`). Per-phase seconds, update tokens and tokens/s, and
the machine-normalised step cost: step seconds x the fp32 matmul GFLOP/s measured in the same run / 1000
(benchmarks/rollouts.py's `matmul_peak`), which compares across machines.

    .venv/bin/python benchmarks/train_step.py [--config tiny-cpu] [--set KEY=VALUE ...]
    .venv/bin/python benchmarks/train_step.py --compare --config cpu-coder \\
        --set selfplay.batch_size=4 --set selfplay.learnability_samples=4
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from azr.config import GenerationConfig, TrainConfig, load_config
from azr.run_dir import RunDir
from azr.trainer import Trainer
from rollouts import matmul_peak  # benchmarks/rollouts.py, next to this script

# The update before issue 17; the engine's switch where the config has it.
BASELINE_SWITCHES = ("optim.separate_logprob_pass=true", "optim.share_prompt_prefix=false")
ENGINE_PREFIX_SWITCH = "generation.share_prompt_prefix"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def baseline_switches(generation_fields: Mapping[str, Any] = GenerationConfig.model_fields) -> list[str]:
    """The `--set` overrides that turn today's optimisations off: the update's, and the engine's prompt
    prefix sharing when `GenerationConfig` has that switch."""
    switches = list(BASELINE_SWITCHES)
    if ENGINE_PREFIX_SWITCH.split(".")[1] in generation_fields:
        switches.append(f"{ENGINE_PREFIX_SWITCH}=false")
    return switches


def normalised_cost(step_seconds: float, fp32_gflops: float) -> float:
    """Step seconds x fp32 matmul GFLOP/s / 1000: roughly the step's work in TFLOP at this machine's peak."""
    return step_seconds * fp32_gflops / 1000


@dataclass(frozen=True)
class StepRun:
    """The last step's metrics of one trainer, and what it cost to set it up."""

    metrics: dict[str, Any]
    setup_seconds: float


def run_steps(config: TrainConfig, steps: int) -> StepRun:
    """`steps` self-play steps from a fresh trainer in a temporary run directory."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        trainer = Trainer(config, RunDir.create(folder, config))
        setup_seconds = time.perf_counter() - started
        try:
            for _ in range(steps):
                metrics = trainer.train_step()
        finally:
            trainer.close()
    return StepRun(metrics, setup_seconds)


def comparison_rows(before: StepRun, after: StepRun, fp32_gflops: float) -> list[tuple[str, str, str, str]]:
    """(measure, before, after, after / before) rows of the side-by-side table."""

    def row(name: str, old: float, new: float, digits: int = 1) -> tuple[str, str, str, str]:
        ratio = f"{new / old:.2f}x" if old else ""
        return name, f"{old:.{digits}f}", f"{new:.{digits}f}", ratio

    old, new = before.metrics, after.metrics
    phases = [key for key in old if key.startswith("time/") and key != "time/step"]
    rows = [row(f"{key.removeprefix('time/')} s", old[key], new.get(key, 0.0)) for key in phases]
    rows.append(row("step s", old["time/step"], new["time/step"]))
    rows += [
        row(
            "update: trained tokens (prompt + response)",
            old["update/sequence_tokens"],
            new["update/sequence_tokens"],
            0,
        ),
        row("update: response tokens", old["update/tokens"], new["update/tokens"], 0),
        row(
            "update: positions forwarded", old["update/forward_positions"], new["update/forward_positions"], 0
        ),
        row("update: trained tokens/s", old["tokens_per_s/update"], new["tokens_per_s/update"]),
        row("generated tokens", old["tokens/generated"], new["tokens/generated"], 0),
        row("generation tokens/s", old["tokens_per_s/generation"], new["tokens_per_s/generation"]),
        row(
            "machine-normalised step cost",
            normalised_cost(old["time/step"], fp32_gflops),
            normalised_cost(new["time/step"], fp32_gflops),
        ),
        row("setup s", before.setup_seconds, after.setup_seconds),
    ]
    return rows


def compare(args: argparse.Namespace, console: Console) -> None:
    fp32_gflops = matmul_peak(torch.float32)
    baseline = [*args.overrides, *baseline_switches()]
    before_config = load_config(args.config, baseline)
    before = run_steps(before_config, args.steps)
    after = run_steps(load_config(args.config, [*args.overrides, *args.new_overrides]), args.steps)
    # `model.dtype: auto` computes in bf16 where the CPU runs it natively, which the fp32 normalisation
    # does not see: say which, with its peak.
    dtype = before_config.model.dtype
    peaks = f"fp32 matmul {fp32_gflops:.1f} GFLOP/s"
    if dtype == "bfloat16":
        peaks += f", bf16 {matmul_peak(torch.bfloat16):.1f}"
    table = Table(
        title=f"step {args.steps} of {args.config} ({' '.join(args.overrides) or 'preset as is'}), "
        f"before issue 17 and now; {dtype} compute; {peaks}"
    )
    table.add_column("measure")
    table.add_column("before", justify="right")
    table.add_column("now", justify="right")
    table.add_column("now / before", justify="right")
    for cells in comparison_rows(before, after, fp32_gflops):
        table.add_row(*cells)
    console.print(table)
    console.print(f"before: --set {' --set '.join(baseline)}")
    if args.new_overrides:
        console.print(f"now, also: --set {' --set '.join(args.new_overrides)}")


def first_generation_requests(trainer: Trainer) -> list[tuple[str, str, object]]:
    """The (group, prompt, params) list of a step's proposals and solver batch, as six phases."""
    size = trainer.config.selfplay.batch_size
    requests = []
    for name, task_type in trainer.task_types.items():
        for _ in range(size):
            prompt = trainer._proposer_prompt(task_type)
            requests.append((f"{name}/propose", prompt.text, trainer._params(task_type, "propose")))
        for task in trainer.buffers[name].sample_solver_batch(trainer.rng, size):
            prompt = trainer._solver_prompt(task_type, task)
            requests.append((f"{name}/solve", prompt, trainer._params(task_type, "solve")))
    return requests


def time_generation(trainer: Trainer, requests, batched: bool) -> tuple[float, int]:
    started = time.perf_counter()
    if batched:
        completions = trainer.backend.generate([r[1] for r in requests], [r[2] for r in requests], seed=0)
    else:
        completions = []
        for group in dict.fromkeys(r[0] for r in requests):
            phase = [r for r in requests if r[0] == group]
            completions += trainer.backend.generate([r[1] for r in phase], [r[2] for r in phase], seed=0)
    return time.perf_counter() - started, sum(len(c.response_ids) for c in completions)


def profile(args: argparse.Namespace, console: Console) -> None:
    config = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as folder:
        run = RunDir.create(folder, config)
        started = time.perf_counter()
        trainer = Trainer(config, run)
        setup_seconds = time.perf_counter() - started
        try:
            metrics = trainer.train_step()
            rss_after_step = peak_rss_gb()
            requests = first_generation_requests(trainer)
            batched_s, batched_tokens = time_generation(trainer, requests, batched=True)
            phased_s, phased_tokens = time_generation(trainer, requests, batched=False)
        finally:
            trainer.close()

    phases = Table(title=f"one self-play step ({args.config}, {' '.join(args.overrides) or 'preset as is'})")
    phases.add_column("phase")
    phases.add_column("seconds", justify="right")
    phases.add_column("share", justify="right")
    total = metrics["time/step"]
    for key, value in metrics.items():
        if key.startswith("time/") and key != "time/step":
            phases.add_row(key.removeprefix("time/"), f"{value:.1f}", f"{value / total:.0%}")
    phases.add_row("step", f"{total:.1f}", "100%")
    console.print(phases)

    throughput = Table(title="throughput and memory")
    throughput.add_column("measure")
    throughput.add_column("value", justify="right")
    throughput.add_row("setup (model load, sandbox pool, seed validation) s", f"{setup_seconds:.1f}")
    throughput.add_row("generated tokens in the step", str(metrics["tokens/generated"]))
    throughput.add_row("generation tokens/s", f"{metrics['tokens_per_s/generation']:.1f}")
    throughput.add_row("update tokens/s (prompt + response)", f"{metrics['tokens_per_s/update']:.1f}")
    throughput.add_row("peak RSS after the step, GB", f"{rss_after_step:.2f}")
    console.print(throughput)

    comparison = Table(title=f"propose+solve generation, {len(requests)} sequences")
    comparison.add_column("way")
    comparison.add_column("seconds", justify="right")
    comparison.add_column("tokens", justify="right")
    comparison.add_column("tokens/s", justify="right")
    comparison.add_row(
        "one call per (type, role) phase (reference)",
        f"{phased_s:.1f}",
        str(phased_tokens),
        f"{phased_tokens / phased_s:.1f}",
    )
    comparison.add_row(
        "one batched call, all types and roles (azr)",
        f"{batched_s:.1f}",
        str(batched_tokens),
        f"{batched_tokens / batched_s:.1f}",
    )
    comparison.add_row(
        "speed-up (tokens/s ratio azr / reference)",
        "",
        "",
        f"{(batched_tokens / batched_s) / (phased_tokens / phased_s):.2f}x",
    )
    console.print(comparison)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="tiny-cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE, both steps")
    parser.add_argument(
        "--compare", action="store_true", help="the step before issue 17 and now, side by side"
    )
    parser.add_argument(
        "--new-set",
        dest="new_overrides",
        action="append",
        default=[],
        help="KEY=VALUE, --compare's new step only",
    )
    parser.add_argument(
        "--steps", type=int, default=1, help="--compare: steps per trainer, the last reported"
    )
    args = parser.parse_args(argv)
    console = Console()
    if args.compare:
        compare(args, console)
    else:
        profile(args, console)


if __name__ == "__main__":
    main()
