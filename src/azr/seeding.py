"""Growing a seed buffer from the identity task with the policy's own proposals, before any update.

The paper grows each buffer to 4·B tasks with the base model before step 1.

Generation is a plain callable, `generate(prompts, request) -> responses`, so the loop runs the same with a
real model, a remote server or a scripted fake in tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from azr.buffer import TaskBuffer, task_key
from azr.tasks.base import Proposal, Role, Task, TaskPool, TaskType

if TYPE_CHECKING:
    from azr.executor import Executor
    from azr.prompts import PromptFormat


@dataclass(frozen=True)
class GenerationRequest:
    """What a batch of prompts is for, and the stop strings its responses should end at."""

    task_type: str
    role: Role
    stop: list[str]


Generate = Callable[[list[str], GenerationRequest], list[str]]


@dataclass(frozen=True)
class SeedingResult:
    """The grown task list (initial tasks first) and how it went; `reached` says if `target` was met."""

    tasks: list[Task]
    target: int
    proposals: int
    valid: int
    rounds: int

    @property
    def reached(self) -> bool:
        return len(self.tasks) >= self.target


def proposal_of(task: Task) -> Proposal:
    """The proposal that would have produced `task`: used to re-validate tasks made elsewhere."""
    return Proposal(program=task.program, input=task.input, inputs=task.inputs, message=task.message)


def validate_seed_tasks(
    task_type: TaskType, executor: Executor, tasks: Sequence[Task], step: int = 0
) -> list[Task]:
    """Re-run seed tasks in our sandbox: outputs are recomputed, invalid and duplicate tasks dropped.

    Seed files were produced by other executors (other Python versions, no determinism check), so their
    stored outputs are not trusted.
    """
    futures = task_type.validate_batch(executor, [proposal_of(task) for task in tasks], step)
    kept: dict[str, Task] = {}
    for future in futures:
        validation = future.result()
        if validation.task is not None:
            kept.setdefault(task_key(validation.task), validation.task)
    return list(kept.values())


def grow_seed_tasks(
    task_type: TaskType,
    fmt: PromptFormat,
    executor: Executor,
    generate: Generate,
    initial: Sequence[Task],
    target: int,
    rng: random.Random,
    *,
    other_pools: Mapping[str, TaskPool] | None = None,
    references: int = 6,
    batch_size: int = 16,
    max_proposals: int | None = None,
    keep: Callable[[Task], bool] | None = None,
) -> SeedingResult:
    """Propose batches from the growing task list until it holds `target` distinct valid tasks.

    `initial` are the starting tasks (at least the identity task). Each proposer prompt shows the references
    the task type draws (`TaskType.proposer_references`) from the growing list and from `other_pools`
    (e.g. the program-and-input buffers an induction prompt takes its program from). Stops after
    `max_proposals` proposals (default 20·target) whether or not the target was reached: a model that cannot
    produce valid tasks ends with `reached == False` instead of looping forever. A valid task that `keep`
    refuses (the trainer's: a held-out probe program, or a program already kept) counts as valid but is not
    kept.
    """
    if not initial:
        raise ValueError("seeding needs at least one initial task (the identity task)")
    limit = max_proposals if max_proposals is not None else 20 * target
    grown = TaskBuffer(":memory:", task_type.name, cap=len(initial) + limit)
    grown.add(initial)
    pools = {**(other_pools or {}), task_type.name: grown}
    request = GenerationRequest(task_type.name, "propose", task_type.stop(fmt, "propose"))
    proposals = valid = rounds = 0
    while len(grown) < target and proposals < limit:
        rounds += 1
        count = min(batch_size, limit - proposals)
        prompts = [
            task_type.proposer_prompt(fmt, task_type.proposer_references(pools, rng, references))
            for _ in range(count)
        ]
        responses = generate([prompt.text for prompt in prompts], request)
        if len(responses) != len(prompts):
            raise ValueError(f"generate returned {len(responses)} responses for {len(prompts)} prompts")
        parsed = [
            task_type.parse_proposal(fmt, prompt, response)
            for prompt, response in zip(prompts, responses, strict=True)
        ]
        proposals += count
        validations = [future.result() for future in task_type.validate_batch(executor, parsed)]
        tasks = [validation.task for validation in validations if validation.task is not None]
        valid += len(tasks)
        grown.add(task for task in tasks if keep is None or keep(task))
    return SeedingResult(list(contents(grown.tasks)), target, proposals, valid, rounds)


def contents(tasks: Sequence[Task]) -> list[Task]:
    """Tasks without the ids of the scratch buffer they were grown in."""
    return [replace(task, task_id=None) for task in tasks]
