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

The fourth table reads the deduction and abduction proposals that validation accepted: how often the
output the proposer wrote after `assert f(ARGS) ==` differs from the one the sandbox computed, and the
advantage summed over the wrong guesses and over the right ones. Unless `optim.mask_unchecked_outputs`
is on, the update trains those guesses with that advantage, and a positive sum over wrong ones teaches
wrong outputs exactly where a deduction solver answers. Guesses and outputs are compared as Python
literals, or as canonical source when either is no literal.

The fifth table reads the deduction and abduction buffers window by window (by the step that made each
task): how many tasks map a number to that number plus or minus one, and the share of the window's most
common output, and how many behave unlike every earlier task of their buffer (`azr.behaviour`: their
outputs on canonical arguments, run in the sandbox; the program text where a program has no such key).
A falling count of new behaviours, or either of the others rising, means the proposer has narrowed to one
behaviour under many program texts, which `selfplay.distinct_programs` (a text key) cannot see and which
a solver learns to answer without reading the program.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.parsing import assert_call, number_literal, program_key
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


@dataclass(frozen=True)
class GuessWindow:
    first_step: int
    last_step: int
    guesses: int  # valid deduction and abduction proposals whose response asserts an output
    wrong: int  # the asserted output is not the one the sandbox computed
    advantage_wrong: float  # advantage summed over the proposals with a wrong guess
    advantage_right: float


def _same_value(first: str, second: str) -> bool:
    try:
        return ast.literal_eval(first) == ast.literal_eval(second)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return first.strip() == second.strip()


def asserted_guess(response: str) -> str | None:
    """The output the last `assert f(ARGS) == GUESS` line of a proposal asserts, in canonical source."""
    for line in reversed(response.splitlines()):
        call = assert_call(line)
        if call is not None and call[1] is not None:
            return call[1]
    return None


def guessed_outputs(samples_by_step: dict[int, list[dict[str, Any]]], window: int) -> list[GuessWindow]:
    """Per window of `window` steps, the valid deduction and abduction proposals' output guesses."""
    windows: dict[int, list[float]] = {}
    for step, samples in samples_by_step.items():
        for sample in samples:
            task = sample.get("task") or {}
            if not (
                sample.get("role") == "propose"
                and sample.get("valid")
                and sample.get("task_type") in ("deduction", "abduction")
                and "output" in task
            ):
                continue
            guess = asserted_guess(str(sample.get("response", "")))
            if guess is None:
                continue
            row = windows.setdefault((step - 1) // window, [0, 0, 0.0, 0.0])
            advantage = float(sample.get("advantage") or 0.0)
            row[0] += 1
            if _same_value(guess, str(task["output"])):
                row[3] += advantage
            else:
                row[1] += 1
                row[2] += advantage
    return [
        GuessWindow(index * window + 1, (index + 1) * window, int(row[0]), int(row[1]), row[2], row[3])
        for index, row in sorted(windows.items())
    ]


@dataclass(frozen=True)
class BehaviourWindow:
    first_step: int
    last_step: int
    task_type: str
    tasks: int
    off_by_one: int  # a single number in, that number plus or minus one out
    top_output_share: float  # share of the window's tasks with its most common output
    new_behaviours: int  # tasks whose behaviour key no earlier task of the buffer has


def behaviour_windows(tasks: list[Any], window: int, keys: list[str]) -> list[BehaviourWindow]:
    """Off-by-one tasks, the most common output and new behaviours (`keys`, one per task), per window (by
    the step that made the task) and type. The seed tasks (step 0) count as earlier than every window."""
    groups: dict[tuple[int, str], list[Any]] = {}
    seen: dict[str, set[str]] = {}
    new: set[int] = set()
    for position in sorted(range(len(tasks)), key=lambda i: tasks[i].step):
        task = tasks[position]
        if task.task_type not in ("deduction", "abduction"):
            continue
        known = seen.setdefault(task.task_type, set())
        if keys[position] not in known:
            known.add(keys[position])
            new.add(position)
        if task.step > 0:
            groups.setdefault(((task.step - 1) // window, task.task_type), []).append(position)
    rows = []
    for (index, task_type), positions in sorted(groups.items()):
        members = [tasks[position] for position in positions]
        off_by_one = 0
        for task in members:
            given, made = number_literal(task.input), number_literal(task.output)
            off_by_one += given is not None and made is not None and abs(made - given) == 1
        top = Counter(task.output for task in members).most_common(1)[0][1]
        rows.append(
            BehaviourWindow(
                index * window + 1,
                (index + 1) * window,
                task_type,
                len(members),
                off_by_one,
                top / len(members),
                len(new.intersection(positions)),
            )
        )
    return rows


def behaviour_keys(tasks: list[Any]) -> list[str]:
    """Each task's behaviour key (`azr.behaviour`), run in the sandbox, or its program text's key where
    it has none; induction tasks, which the behaviour table leaves out, get their text key unrun."""
    from azr.behaviour import copy_key, submit_behaviour_key
    from azr.executor import Executor
    from azr.tasks import Task

    with Executor() as executor:
        futures = [
            submit_behaviour_key(executor, Task(task.program, task.input, task.output))
            if task.task_type in ("deduction", "abduction")
            else None
            for task in tasks
        ]
        behaviours = [future.result() if future is not None else None for future in futures]
    return [copy_key(task.program, behaviour) for task, behaviour in zip(tasks, behaviours, strict=True)]


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
        behaviours = behaviour_windows(data.tasks, args.window, behaviour_keys(data.tasks))
        if behaviours:
            print(
                "| steps | buffer | tasks made | new behaviours | number in, number ± 1 out "
                "| most common output's share |"
            )
            print("|---|---|---|---|---|---|")
            for row in behaviours:
                print(
                    f"| {row.first_step}-{row.last_step} | {row.task_type} | {row.tasks} "
                    f"| {row.new_behaviours} | {row.off_by_one} | {row.top_output_share:.2f} |"
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
        guesses = guessed_outputs(data.samples, args.window)
        if guesses:
            masked = bool((data.config.get("optim") or {}).get("mask_unchecked_outputs"))
            print()
            print(f"Guessed outputs of valid deduction and abduction proposals (trained: {not masked}):")
            print()
            print("| steps | guesses | wrong | advantage summed, wrong | advantage summed, right |")
            print("|---|---|---|---|---|")
            for row in guesses:
                print(
                    f"| {row.first_step}-{row.last_step} | {row.guesses} | {row.wrong} "
                    f"| {row.advantage_wrong:+.2f} | {row.advantage_right:+.2f} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
