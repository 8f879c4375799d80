"""What a self-play run gives its solver to learn from: how varied its buffers are, and whether the solver
answers by copying its worked example.

    python benchmarks/selfplay_signal.py RUN_DIR [--window 20]

The first table reads the run's buffers: per task type, the tasks stored, the distinct programs among
them (compared by `azr.parsing.program_key`, so a copy with renamed names is the same program), how many
are the identity program, and the share of the three most common programs. Buffers deduplicate by exact
text, so a model that keeps proposing the identity function under new names fills them with one program.

The second table reads the samples files, window by window (`--window` steps each): per task type, the
valid proposals, how many are the identity program, how many earned a learnability reward (solved by
some but not all of their samples), and how many validation refused as shortcut tasks
(`selfplay.reject_shortcut_tasks`): a proposer that settles on the identity program proposes only tasks
its solver always solves, which teach nothing.

The third table reads the same windows: the induction answers saved, how many repeat a program that stands
verbatim in their prompt (the worked example), and how many of those copies were graded right. An
induction task's answer is a whole program, so a verbatim repeat is a copy, not a coincidence; a copy
scores only where the task's program behaves like the example's.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.parsing import program_key
from azr.report import RunData
from azr.tasks.base import IDENTITY_PROGRAM, SHORTCUT_REASON

IDENTITY_KEY = program_key(IDENTITY_PROGRAM)


@dataclass(frozen=True)
class BufferDiversity:
    task_type: str
    tasks: int
    programs: int  # distinct program keys
    identity: int  # tasks whose program is the identity under another name
    top3_share: float  # share of the tasks held by the three most common programs


def buffer_diversity(programs_by_type: dict[str, list[str]]) -> list[BufferDiversity]:
    rows = []
    for task_type, programs in programs_by_type.items():
        keys = Counter(program_key(program) for program in programs)
        tasks = sum(keys.values())
        top3 = sum(count for _, count in keys.most_common(3))
        rows.append(
            BufferDiversity(task_type, tasks, len(keys), keys[IDENTITY_KEY], top3 / tasks if tasks else 0.0)
        )
    return rows


@dataclass(frozen=True)
class CopyWindow:
    first_step: int
    last_step: int
    answers: int
    copies: int  # the answer stands verbatim in its prompt
    copies_right: int


def is_copy(sample: dict[str, Any]) -> bool:
    answer = str(sample.get("response", "")).strip()
    return bool(answer) and answer in str(sample.get("prompt", ""))


def induction_copies(samples_by_step: dict[int, list[dict[str, Any]]], window: int) -> list[CopyWindow]:
    """Induction answers per window of `window` steps (counting from step 1), and their verbatim copies."""
    windows: dict[int, list[dict[str, Any]]] = {}
    for step, samples in samples_by_step.items():
        answers = [s for s in samples if s.get("task_type") == "induction" and s.get("role") == "solve"]
        windows.setdefault((step - 1) // window, []).extend(answers)
    rows = []
    for index in sorted(windows):
        answers = windows[index]
        copies = [s for s in answers if is_copy(s)]
        rows.append(
            CopyWindow(
                first_step=index * window + 1,
                last_step=(index + 1) * window,
                answers=len(answers),
                copies=len(copies),
                copies_right=sum(bool(s.get("correct")) for s in copies),
            )
        )
    return rows


@dataclass(frozen=True)
class ProposalWindow:
    first_step: int
    last_step: int
    task_type: str
    valid: int
    identity: int  # valid proposals whose program is the identity under another name
    learnable: int  # proposals with a positive reward: valid, solved by some but not all samples
    shortcut: int  # refused by validation: a shortcut answer solves the task


def proposal_windows(samples_by_step: dict[int, list[dict[str, Any]]], window: int) -> list[ProposalWindow]:
    """Valid, identity, learnable and shortcut-refused proposals per window of `window` steps and type."""
    counts: dict[tuple[int, str], list[int]] = {}
    for step, samples in samples_by_step.items():
        for sample in samples:
            if sample.get("role") != "propose":
                continue
            row = counts.setdefault(((step - 1) // window, sample["task_type"]), [0, 0, 0, 0])
            if sample.get("valid"):
                row[0] += 1
                program = (sample.get("task") or {}).get("program", "")
                row[1] += program_key(program) == IDENTITY_KEY
            row[2] += float(sample.get("reward") or 0) > 0
            row[3] += sample.get("reason") == SHORTCUT_REASON
    return [
        ProposalWindow(index * window + 1, (index + 1) * window, task_type, *row)
        for (index, task_type), row in sorted(counts.items())
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--window", type=int, default=20, help="steps per row of the window tables (default 20)"
    )
    args = parser.parse_args(argv)
    data = RunData.load(args.run_dir)
    for problem in data.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not data.tasks and not data.samples:
        print(
            f"error: {args.run_dir} has neither buffered tasks nor samples: is it a run directory?",
            file=sys.stderr,
        )
        return 2
    if data.tasks:
        programs: dict[str, list[str]] = {}
        for task in data.tasks:
            programs.setdefault(task.task_type, []).append(task.program)
        print("| buffer | tasks | distinct programs | identity copies | top-3 programs' share |")
        print("|---|---|---|---|---|")
        for row in buffer_diversity(programs):
            print(
                f"| {row.task_type} | {row.tasks} | {row.programs} | {row.identity} | {row.top3_share:.2f} |"
            )
        print()
    if data.samples:
        proposals = proposal_windows(data.samples, args.window)
        if proposals:  # a solver-only run proposes nothing
            print("| steps | type | valid proposals | identity programs | learnable | refused as shortcuts |")
            print("|---|---|---|---|---|---|")
            for row in proposals:
                print(
                    f"| {row.first_step}-{row.last_step} | {row.task_type} | {row.valid} | {row.identity} "
                    f"| {row.learnable} | {row.shortcut} |"
                )
            print()
        print("| steps | induction answers | verbatim copies of the prompt | copies graded right |")
        print("|---|---|---|---|")
        for row in induction_copies(data.samples, args.window):
            print(f"| {row.first_step}-{row.last_step} | {row.answers} | {row.copies} | {row.copies_right} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
