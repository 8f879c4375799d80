"""A run's learning curve as tables: every step, then the first k steps against the last k.

    python benchmarks/learning_curve.py RUN_DIR [--window 5]

The first table has one row per step (valid-proposal rate, solve rate, mean rewards, the mean solve rate of
the step's valid proposals over their learnability samples, tasks added to the buffers, step and update
seconds), each cell `deduction / abduction / induction`. The second pools the first and last `--window`
steps of each type: counts out of `selfplay.batch_size` draws per step, the two rates, and Fisher's exact
two-sided p for "the rate did not change", so a rise of a few tasks in twenty can be told from chance. Its
"learnable proposals" are those with a positive proposer reward (valid, solved sometimes but not always),
counted from the run's samples files.

A third table, when the run validated in training (`eval.every_steps`), has the scores of every
validation step (a probe benchmark's also on its shortcut-proof tasks, as `azr compare` reports them)
with the update's tokens so far (whole sequences and trained response tokens), so that two runs
(self-play and its control) can be set side by side by tokens as well as steps. `--base RESULTS.json` (an
`azr eval` results file of the starting model) adds a step-0 row scored on the same first `eval.limit`
problems of each benchmark.

    python benchmarks/learning_curve.py RUN_DIR [--window 5] [--base benchmarks/results/probe-base.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from azr.evaluation.benchmarks import expand_aliases
from azr.probe import shortcut_proof_scores
from azr.report import RunData
from azr.run_dir import RunDir


def fisher_exact_p(hits_a: int, total_a: int, hits_b: int, total_b: int) -> float:
    """Two-sided p of Fisher's exact test on the 2x2 table (hits, misses) x (a, b)."""
    hits = hits_a + hits_b
    total = total_a + total_b

    def probability(k: int) -> float:
        return math.comb(total_a, k) * math.comb(total_b, hits - k) / math.comb(total, hits)

    observed = probability(hits_a)
    possible = range(max(0, hits - total_b), min(total_a, hits) + 1)
    # Tables as likely as the observed one count too; the tolerance keeps float ties from dropping it.
    return min(1.0, sum(p for p in map(probability, possible) if p <= observed * (1 + 1e-9)))


def window_counts(records: list[dict[str, Any]], key: str, draws: int) -> tuple[int, int]:
    """(hits, draws) of a per-step rate over the given steps, skipping steps that did not log it."""
    rates = [r[key] for r in records if isinstance(r.get(key), int | float)]
    return sum(round(rate * draws) for rate in rates), draws * len(rates)


def add_learnable_rates(data: RunData, draws: int) -> None:
    """Set `learnable_rate/<type>` on the steps that have a samples file: the share of the step's
    proposals whose proposer reward is positive, which only a valid task with 0 < acc < 1 earns. A step
    without proposals (a solver-only run) gets none."""
    for record in data.metrics:
        proposals = [s for s in data.samples.get(record["step"], []) if s.get("role") == "propose"]
        if not proposals:
            continue
        for task_type in data.task_types():
            learnable = sum(
                1 for s in proposals if s.get("task_type") == task_type and s.get("reward", 0) > 0
            )
            record[f"learnable_rate/{task_type}"] = learnable / draws


def _cell(record: dict[str, Any], keys: list[str], digits: int = 2) -> str:
    def one(key: str) -> str:
        value = record.get(key)
        return f"{value:.{digits}f}" if isinstance(value, int | float) else "—"

    return " / ".join(one(key) for key in keys)


def step_table(records: list[dict[str, Any]], task_types: list[str]) -> list[str]:
    columns = {
        "valid": "valid_rate/{}",
        "solve rate": "solve_rate/{}",
        "proposer reward": "reward/{}/propose",
        "solver reward": "reward/{}/solve",
        "learnability acc": "learnability/{}",
        "buffer added": "buffer_added/{}",
    }
    initials = "/".join(name[0] for name in task_types)
    header = ["step", *(f"{name} {initials}" for name in columns), "step s (update s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in records:
        cells = [str(record["step"])]
        for name, pattern in columns.items():
            cells.append(
                _cell(record, [pattern.format(t) for t in task_types], 0 if name == "buffer added" else 2)
            )
        cells.append(f"{record.get('time/step', 0):.0f} ({record.get('time/update', 0):.0f})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def window_table(records: list[dict[str, Any]], task_types: list[str], draws: int, window: int) -> list[str]:
    first, last = records[:window], records[-window:]
    lines = [
        f"| rate | type | first {len(first)} steps | last {len(last)} steps | Fisher p |",
        "|---|---|---|---|---|",
    ]
    rates = (
        ("valid proposals", "valid_rate/{}"),
        ("learnable proposals", "learnable_rate/{}"),
        ("solved", "solve_rate/{}"),
    )
    for name, pattern in rates:
        for task_type in task_types:
            key = pattern.format(task_type)
            before = window_counts(first, key, draws)
            after = window_counts(last, key, draws)
            if not before[1] or not after[1]:
                continue
            p = fisher_exact_p(*before, *after)
            lines.append(
                f"| {name} | {task_type} | {before[0]}/{before[1]} = {before[0] / before[1]:.2f} "
                f"| {after[0]}/{after[1]} = {after[0] / after[1]:.2f} | {p:.2f} |"
            )
    return lines


def base_scores(results: dict[str, Any], benchmarks: list[str], limit: int) -> dict[str, float]:
    """Each benchmark's score over its first `limit` records of an `azr eval` results file (the problems
    in-training validation asks), for the benchmarks the file has, and of each probe benchmark's
    shortcut-proof subset of them."""
    scores = {}
    asked = []
    for name in expand_aliases(benchmarks):
        records = [r for r in results.get("records", []) if r.get("benchmark") == name][:limit]
        if records:
            scores[name] = sum(bool(r["correct"]) for r in records) / len(records)
            asked += records
    return {**scores, **shortcut_proof_scores(asked)}


def validation_table(records: list[dict[str, Any]], base: dict[str, float] | None = None) -> list[str]:
    """Rows of the steps that logged `eval/<benchmark>` (and a step-0 row from `base`): the update's
    tokens so far, whole sequences (prompt + response, `update/sequence_tokens`) and trained response
    tokens (`update/tokens`), and each score in percent."""
    names = sorted({key.removeprefix("eval/") for r in records for key in r if key.startswith("eval/")})
    if not names:
        return []
    header = ["step", "sequence tokens so far", "trained tokens so far", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def percent(value: Any) -> str:
        return f"{100 * value:.1f}" if isinstance(value, int | float) else "—"

    if base:
        lines.append("| 0 | 0 | 0 | " + " | ".join(percent(base.get(name)) for name in names) + " |")
    sequence_tokens = trained_tokens = 0
    for record in records:
        sequence_tokens += int(record.get("update/sequence_tokens", 0))
        trained_tokens += int(record.get("update/tokens", 0))
        if any(f"eval/{name}" in record for name in names):
            scores = " | ".join(percent(record.get(f"eval/{name}")) for name in names)
            lines.append(f"| {record['step']} | {sequence_tokens} | {trained_tokens} | {scores} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--window", type=int, default=5, help="steps pooled at each end (default 5)")
    parser.add_argument(
        "--base", type=Path, help="an `azr eval` results file of the starting model: a step-0 validation row"
    )
    args = parser.parse_args(argv)
    if not RunDir(args.run_dir).metrics_path.is_file():
        print(f"error: {args.run_dir} has no metrics.jsonl: is it a run directory?", file=sys.stderr)
        return 2
    data = RunData.load(args.run_dir)
    if not data.metrics:
        print(f"error: {args.run_dir} has no steps yet", file=sys.stderr)
        return 2
    data.metrics.sort(key=lambda record: record["step"])
    task_types = data.task_types()
    draws = int(data.config.get("selfplay", {}).get("batch_size", 1))
    add_learnable_rates(data, draws)
    print("\n".join(step_table(data.metrics, task_types)))
    print()
    print("\n".join(window_table(data.metrics, task_types, draws, args.window)))
    evaluation = data.config.get("eval", {})
    base = None
    if args.base is not None:
        results = json.loads(args.base.read_text())
        base = base_scores(results, list(evaluation.get("benchmarks", [])), int(evaluation.get("limit", 0)))
    validation = validation_table(data.metrics, base)
    if validation:
        print()
        print("\n".join(validation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
