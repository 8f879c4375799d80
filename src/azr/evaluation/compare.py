"""Two `azr eval` results files side by side, problem by problem: `azr compare BEFORE AFTER`.

A score that moves by a point or two on 200 problems can be noise. What says more is the problems whose
verdict flipped: how many went from wrong to right (gained) and from right to wrong (lost). Under "training
changed nothing systematic" each flip is equally likely to go either way, so the exact two-sided sign test
on gained against lost (McNemar's exact test) gives the chance of a split at least that lopsided. Answers
whose text changed without a flip show that the model moved at all.

Each probe benchmark (`azr.probe`) gets a second row, `probe-<type> shortcut-proof`, on its tasks that no
answer ignoring the program solves: there a rise cannot be the model giving the question back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any

import typer


@dataclass(frozen=True)
class BenchmarkDiff:
    benchmark: str
    problems: int  # graded in both files
    before: float  # fraction correct on those problems (first sample of each)
    after: float
    changed_answers: int  # the extracted answer's text differs
    gained: int  # wrong before, right after
    lost: int  # right before, wrong after

    @property
    def p_value(self) -> float:
        return sign_test(self.gained, self.lost)


def sign_test(gained: int, lost: int) -> float:
    """Exact two-sided p-value of a `gained`/`lost` split when each flip is a fair coin."""
    flips = gained + lost
    if flips == 0:
        return 1.0
    tail = sum(comb(flips, k) for k in range(min(gained, lost) + 1)) / 2**flips
    return min(1.0, 2 * tail)


def compare_records(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[BenchmarkDiff]:
    """One diff per benchmark over the problems graded in both record lists (matched by benchmark and
    id), in the order the benchmarks first appear in `before`."""
    after_by_key = {(r["benchmark"], r["id"]): r for r in after}
    paired: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for record in before:
        other = after_by_key.get((record["benchmark"], record["id"]))
        if other is not None:
            paired.setdefault(record["benchmark"], []).append((record, other))
    if not paired:
        raise ValueError("the two results files share no problem (same benchmark and id)")
    diffs = []
    for benchmark, pairs in paired.items():
        n = len(pairs)
        diffs.append(
            BenchmarkDiff(
                benchmark=benchmark,
                problems=n,
                before=sum(bool(b["correct"]) for b, _ in pairs) / n,
                after=sum(bool(a["correct"]) for _, a in pairs) / n,
                changed_answers=sum(b["answer"] != a["answer"] for b, a in pairs),
                gained=sum(not b["correct"] and bool(a["correct"]) for b, a in pairs),
                lost=sum(bool(b["correct"]) and not a["correct"] for b, a in pairs),
            )
        )
    return diffs


RECORD_FIELDS = {"benchmark", "id", "correct", "answer"}


def load_records(path: Path) -> list[dict[str, Any]]:
    """The per-problem records of a results file; a clear `ValueError` for anything else."""
    try:
        results = json.loads(path.read_text("utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path}: not JSON") from None
    records = results.get("records") if isinstance(results, dict) else None
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and r.keys() >= RECORD_FIELDS for r in records
    ):
        raise ValueError(f"{path}: not a results file of `azr eval --out` (no per-problem records)")
    return records


def compare_command(
    before: Path = typer.Argument(..., help="Results file of `azr eval --out` (e.g. the base model)."),
    after: Path = typer.Argument(..., help="Results file of the same evaluation of another model."),
) -> None:
    """Compare two `azr eval` results files problem by problem: score change, verdict flips, sign test."""
    from rich.console import Console
    from rich.table import Table

    from azr.probe import with_shortcut_proof_subsets

    try:
        diffs = compare_records(
            with_shortcut_proof_subsets(load_records(before)),
            with_shortcut_proof_subsets(load_records(after)),
        )
    except ValueError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    table = Table(title=f"{before} -> {after}")
    table.add_column("benchmark")
    for column in ("problems", "before", "after", "answers changed", "gained", "lost", "p"):
        table.add_column(column, justify="right")
    for d in diffs:
        table.add_row(
            d.benchmark,
            str(d.problems),
            f"{100 * d.before:.1f}%",
            f"{100 * d.after:.1f}%",
            str(d.changed_answers),
            str(d.gained),
            str(d.lost),
            f"{d.p_value:.3f}",
        )
    console = Console()
    if not console.is_terminal:  # a pipe or a file: no terminal width to fit, so no row is cut short
        console = Console(width=max(console.width, 120))
    console.print(table)
