"""One self-play step on the embedded model: where the time goes, throughput and peak memory.

Also compares, in the same run, the step's first generation done as one batched call over every task
type and role (azr) against one generate call per (type, role) phase, as the reference implementation
does. Same prompts, same sampling parameters, same seed.

    .venv/bin/python benchmarks/train_step.py [--config tiny-cpu] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

from rich.console import Console
from rich.table import Table

from azr.config import load_config
from azr.run_dir import RunDir
from azr.trainer import Trainer


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="tiny-cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    console = Console()

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


if __name__ == "__main__":
    main()
