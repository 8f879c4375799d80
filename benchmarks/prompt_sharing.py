"""Shared prompt draws against per-prompt draws, on the same seeds: valid rate and diversity of proposals,
solve rate of answers, and how much of each prompt the batch shares.

    .venv/bin/python benchmarks/prompt_sharing.py --config cpu-coder --steps 4

Builds the trainer of `--config` (model, rollout backend, buffers from its seed file, prompts and token
budgets), then for `selfplay.shared_references` off and on proposes `--steps` steps' worth of B prompts per
task type, exactly as a training step does (the trainer's rng reset to the run seed, step seeds 1..steps),
and parses and validates every proposal in the sandbox. Nothing is solved from the proposals and nothing is
learned; the buffers do not change. Then, for `selfplay.shared_solver_examples` off and on, the same B
buffer tasks per type and step (drawn once, from a separate rng) get solver prompts built by the trainer,
are answered and judged.

Proposal columns, per type: parsed and valid counts; valid tasks that duplicate an earlier one of the same
step; distinct valid tasks and programs; the mean AST edit distance between valid programs of one step
(batch diversity) and from each valid program to K buffer programs (the paper's diversity measure;
meaningless for induction, whose programs are given); answer spread (distinct outputs over valid tasks).
Prompt columns: mean prompt tokens and the mean longest token prefix common to the prompts of a (type,
step), which an engine or update that reuses shared prefixes computes once.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from azr.buffer import task_key
from azr.config import load_config
from azr.parsing import normalize_program
from azr.program_metrics import answer_spread, ast_edit_distance, mean_distance_to_references
from azr.rollouts import Rollout
from azr.run_dir import RunDir
from azr.trainer import Trainer


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix every sequence starts with."""
    length = 0
    for column in zip(*sequences, strict=False):
        if any(token != column[0] for token in column):
            break
        length += 1
    return length


def mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


@dataclass
class PromptShape:
    tokens: list[int]
    shared_prefix: list[int]


def prompt_shapes(trainer: Trainer, rollouts: Sequence[Rollout], shapes: dict[str, PromptShape]) -> None:
    """Add one step's prompt lengths and per-type common prefix to `shapes`."""
    for name in trainer.task_types:
        ids = [trainer.policy.tokenizer(r.prompt)["input_ids"] for r in rollouts if r.task_type == name]
        shape = shapes.setdefault(name, PromptShape([], []))
        shape.tokens += [len(i) for i in ids]
        shape.shared_prefix.append(common_prefix_length(ids))


def propose_steps(trainer: Trainer, steps: int, console: Console) -> tuple[list[list[Rollout]], float]:
    """`steps` steps of proposals from the run's initial rng, validated; the buffers are left as they are."""
    trainer.rng = random.Random(trainer.config.seed)
    started = time.perf_counter()
    per_step = []
    for step in range(1, steps + 1):
        trainer.step = step
        proposals = trainer.propose()
        trainer.check_proposals(proposals)
        per_step.append(proposals)
        valid = {name: sum(p.valid for p in proposals if p.task_type == name) for name in trainer.task_types}
        console.log(
            f"shared_references={trainer.config.selfplay.shared_references} step {step}: valid {valid}"
        )
    return per_step, time.perf_counter() - started


def proposal_row(trainer: Trainer, name: str, per_step: list[list[Rollout]], seed: int) -> dict[str, str]:
    own = [[p for p in step if p.task_type == name] for step in per_step]
    flat = [p for step in own for p in step]
    valid = [p for p in flat if p.valid]
    duplicates = 0
    batch_distances = []
    for step in own:
        tasks = [p.validation.task for p in step if p.valid]
        duplicates += len(tasks) - len({task_key(t) for t in tasks})
        for a, b in itertools.combinations([t.program for t in tasks], 2):
            distance = ast_edit_distance(a, b)
            if distance is not None:
                batch_distances.append(distance)
    programs = [p.validation.task.program for p in valid]
    references = [task.program for task in trainer.buffers[name].tasks]
    to_references = mean_distance_to_references(
        programs, references, random.Random(seed), trainer.config.selfplay.references
    )
    outputs = [repr(t.outputs) if t.inputs else t.output for t in (p.validation.task for p in valid)]
    spread = answer_spread(outputs)
    return {
        "parsed": f"{sum(p.is_parsed for p in flat)}/{len(flat)}",
        "valid": f"{len(valid)}/{len(flat)}",
        "dup in step": str(duplicates),
        "distinct tasks": str(len({task_key(p.validation.task) for p in valid})),
        "distinct programs": str(len({normalize_program(program) for program in programs})),
        "AST dist in step": fmt(mean(batch_distances)),
        "AST dist to refs": fmt(to_references),
        "answer spread": fmt(spread),
    }


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def solve_steps(
    trainer: Trainer, tasks_per_step: list[dict[str, list]], console: Console
) -> tuple[list[list[Rollout]], float]:
    """Solver prompts for the given tasks, built by the trainer (examples shared or not, as configured),
    answered in one generation call per step and judged."""
    trainer.rng = random.Random(trainer.config.seed)
    started = time.perf_counter()
    answered = []
    for step, tasks in enumerate(tasks_per_step, start=1):
        trainer.step = step
        rollouts = []
        for name, task_type in trainer.task_types.items():
            drawn = trainer._shared_solver_examples(task_type)
            for task in tasks[name]:
                rollouts.append(
                    Rollout(name, "solve", trainer._solver_prompt(task_type, task, drawn), task=task)
                )
        trainer._generate(rollouts, call=1)
        trainer.judge(rollouts)
        answered.append(rollouts)
        correct = {
            name: sum(r.correct for r in rollouts if r.task_type == name) for name in trainer.task_types
        }
        console.log(
            f"shared_solver_examples={trainer.config.selfplay.shared_solver_examples} step {step}: {correct}"
        )
    return answered, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="cpu-coder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE override")
    parser.add_argument("--steps", type=int, default=4, help="steps' worth of proposals per setting")
    parser.add_argument(
        "--solve-steps", type=int, default=None, help="steps' worth of answers (default --steps)"
    )
    parser.add_argument(
        "--settings",
        default="off,on",
        help="which settings of the switches to run, e.g. 'on' alone to rerun one side (default off,on)",
    )
    args = parser.parse_args()
    settings = [{"off": False, "on": True}[name] for name in args.settings.split(",")]
    solve_steps_count = args.steps if args.solve_steps is None else args.solve_steps

    console = Console(width=200)
    config = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, RunDir.create(f"{tmp}/run", config))
        try:
            selfplay = trainer.config.selfplay
            proposal_rows, shapes, seconds = {}, {}, {}
            for shared in settings:
                selfplay.shared_references = shared
                per_step, seconds[("propose", shared)] = propose_steps(trainer, args.steps, console)
                shapes[shared] = {}
                for proposals in per_step:
                    prompt_shapes(trainer, proposals, shapes[shared])
                for name in trainer.task_types:
                    proposal_rows[(shared, name)] = proposal_row(trainer, name, per_step, config.seed)
            selfplay.shared_references = False

            task_rng = random.Random(config.seed + 1)
            tasks_per_step = [
                {
                    name: trainer.buffers[name].sample_solver_batch(task_rng, selfplay.batch_size)
                    for name in trainer.task_types
                }
                for _ in range(solve_steps_count)
            ]
            solve_rows, solve_shapes = {}, {}
            for shared in settings if solve_steps_count else ():
                selfplay.shared_solver_examples = shared
                answered, seconds[("solve", shared)] = solve_steps(trainer, tasks_per_step, console)
                solve_shapes[shared] = {}
                for rollouts in answered:
                    prompt_shapes(trainer, rollouts, solve_shapes[shared])
                for name in trainer.task_types:
                    own = [r for step in answered for r in step if r.task_type == name]
                    solve_rows[(shared, name)] = f"{sum(r.correct for r in own)}/{len(own)}"
        finally:
            trainer.close()

    setting = {False: "per prompt", True: "shared"}
    title = (
        f"proposals: {args.config}, {args.steps} steps x B={selfplay.batch_size} per type, "
        f"K={selfplay.references}, seed {config.seed}"
    )
    table = Table(title=title)
    columns = ["references", "type", *next(iter(proposal_rows.values())), "prompt tokens", "shared prefix"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("references", "type") else "right")
    for (shared, name), row in proposal_rows.items():
        shape = shapes[shared][name]
        table.add_row(
            setting[shared],
            name,
            *row.values(),
            fmt(mean(shape.tokens), 0),
            fmt(mean(shape.shared_prefix), 0),
        )
    console.print(table)

    table = Table(
        title=f"answers: the same {solve_steps_count} x B buffer tasks per type, "
        f"solver_examples={selfplay.solver_examples}"
    )
    for column in ("examples", "type", "correct", "prompt tokens", "shared prefix"):
        table.add_column(column, justify="left" if column in ("examples", "type") else "right")
    for (shared, name), correct in solve_rows.items():
        shape = solve_shapes[shared][name]
        table.add_row(
            setting[shared], name, correct, fmt(mean(shape.tokens), 0), fmt(mean(shape.shared_prefix), 0)
        )
    console.print(table)
    console.print(
        "seconds: "
        + ", ".join(f"{phase} {setting[shared]} {value:.0f}" for (phase, shared), value in seconds.items())
    )


if __name__ == "__main__":
    main()
