"""How much of a probe score answers that never read the program earn, and what is left without them.

    python benchmarks/probe_shortcuts.py BASE.json AFTER.json [AFTER.json ...]

The shortcut answers (`shortcut_answers` of each task type): for deduction the task's input given back as
its output, for abduction the task's output given back as its input (the copy answers a model that learnt
identity tasks gives), for induction a program that returns its argument or the first shown output. The
probe ships which tasks one of them solves (`azr/data/probe/shortcuts.json`, judged in the sandbox by the
task type's own check): constant or identity-like programs; the others are shortcut-proof. Then, for
every results file (`azr eval` on the probe): the score, how many deduction and abduction answers are
copies, how many deduction answers to a task whose input is one number are that number plus or minus one
(what a solver trained on off-by-one tasks answers without reading the program), and the score on the
shortcut-proof tasks alone with the sign test against the first file on them (`azr compare` prints the
same rows). A rise there is not a shortcut; a rise on the shortcut-solvable tasks
alone may be.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.evaluation.compare import compare_records, load_records
from azr.parsing import normalize_arguments, number_literal
from azr.probe import PROBE_TYPES, ProbeTask, load_probe, probe_task_type, shortcut_solvable_ids
from azr.tasks import Task

COPY_TYPES = ("deduction", "abduction")


def copy_answer(task_type: str, task: Task) -> str:
    """The deduction or abduction answer that gives the question back."""
    (answer,) = probe_task_type(task_type).shortcut_answers(task)
    return answer


def same_value(answer: Any, copy: str) -> bool:
    """Whether an answer is the copy answer, up to quotes and spacing."""
    if answer is None:
        return False
    return normalize_arguments(str(answer)) == normalize_arguments(copy)


def off_by_one(answer: Any, task: Task) -> bool:
    """Whether a deduction answer is the task's single number input plus or minus one."""
    given, said = number_literal(task.input), number_literal(str(answer)) if answer is not None else None
    return given is not None and said is not None and abs(said - given) == 1


@dataclass(frozen=True)
class SplitScore:
    task_type: str
    problems: int
    right: int
    copies: int | None  # deduction and abduction answers that give the question back
    off_by_one: int | None  # deduction answers that are the single number input plus or minus one
    proof_problems: int  # shortcut-proof tasks
    proof_right: int
    proof_gained: int | None  # against the first file, on the shortcut-proof tasks
    proof_lost: int | None
    proof_p: float | None


def is_right(record: dict[str, Any]) -> bool:
    return bool(record["correct"])


def split_scores(
    records: list[dict[str, Any]],
    base_records: list[dict[str, Any]] | None,
    tasks: dict[str, ProbeTask],
    solvable: set[str],
) -> list[SplitScore]:
    scores = []
    for task_type in PROBE_TYPES:
        mine = [r for r in records if r["benchmark"] == f"probe-{task_type}"]
        if not mine:
            continue
        proof = [r for r in mine if r["id"] not in solvable]
        copies = None
        if task_type in COPY_TYPES:
            copies = sum(
                same_value(r.get("answer"), copy_answer(task_type, tasks[r["id"]].task)) for r in mine
            )
        shifted = None
        if task_type == "deduction":
            shifted = sum(off_by_one(r.get("answer"), tasks[r["id"]].task) for r in mine)
        gained = lost = p = None
        if base_records is not None:
            proof_ids = {r["id"] for r in proof}
            base_proof = [
                r for r in base_records if r["benchmark"] == f"probe-{task_type}" and r["id"] in proof_ids
            ]
            if base_proof:
                (diff,) = compare_records(base_proof, proof)
                gained, lost, p = diff.gained, diff.lost, diff.p_value
        scores.append(
            SplitScore(
                task_type=task_type,
                problems=len(mine),
                right=sum(map(is_right, mine)),
                copies=copies,
                off_by_one=shifted,
                proof_problems=len(proof),
                proof_right=sum(map(is_right, proof)),
                proof_gained=gained,
                proof_lost=lost,
                proof_p=p,
            )
        )
    return scores


def table(rows: list[tuple[str, SplitScore]]) -> list[str]:
    lines = [
        "| results | type | score | copy answers | number ± 1 answers | shortcut-proof tasks: score "
        "| gained / lost vs first | sign p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        versus = "—" if s.proof_gained is None else f"{s.proof_gained} / {s.proof_lost}"
        p = "—" if s.proof_p is None else f"{s.proof_p:.3g}"
        proof = 100 * s.proof_right / max(s.proof_problems, 1)
        copies = "—" if s.copies is None else s.copies
        shifted = "—" if s.off_by_one is None else s.off_by_one
        lines.append(
            f"| {name} | {s.task_type} | {s.right}/{s.problems} = {100 * s.right / s.problems:.1f}% "
            f"| {copies} | {shifted} | {s.proof_right}/{s.proof_problems} = {proof:.1f}% | {versus} | {p} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results", type=Path, nargs="+", help="`azr eval` results files on the probe; the first is the base"
    )
    args = parser.parse_args(argv)
    try:
        files = [(path, load_records(path)) for path in args.results]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tasks = {task.id: task for task_type in PROBE_TYPES for task in load_probe(task_type)}
    solvable = set().union(*shortcut_solvable_ids().values())
    for task_type in PROBE_TYPES:
        n = sum(task.task_type == task_type for task in tasks.values())
        hits = sum(tasks[i].task_type == task_type for i in solvable)
        print(f"probe-{task_type}: a shortcut answer is right on {hits} of {n} tasks")
    print()
    base = files[0][1]
    rows = []
    for index, (path, records) in enumerate(files):
        for score in split_scores(records, None if index == 0 else base, tasks, solvable):
            rows.append((path.name, score))
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
