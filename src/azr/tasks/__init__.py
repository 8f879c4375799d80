"""The task types of Absolute Zero, one module each, behind the common `TaskType` interface.

`TASK_TYPES` maps a name to its class; a new task type is a new module plus one line here and its template
files in each prompt format.
"""

from typing import Any

from azr.tasks.abduction import Abduction
from azr.tasks.base import (
    IDENTITY_INPUT,
    IDENTITY_PROGRAM,
    ROLES,
    Proposal,
    ProposerPrompt,
    Role,
    Task,
    TaskPool,
    TaskType,
    Validation,
)
from azr.tasks.deduction import Deduction
from azr.tasks.induction import Induction
from azr.tasks.seeds import load_seed_tasks, shipped_seed_path

TASK_TYPES: dict[str, type[TaskType]] = {cls.name: cls for cls in (Deduction, Abduction, Induction)}


def get_task_type(name: str, selfplay: Any = None) -> TaskType:
    """An instance of the task type `name`, configured from a `SelfPlayConfig` when one is given
    (e.g. induction's number of inputs), else with its defaults."""
    if name not in TASK_TYPES:
        raise ValueError(f"unknown task type {name!r}; known: {', '.join(TASK_TYPES)}")
    task_type = TASK_TYPES[name]
    return task_type.from_config(selfplay) if selfplay is not None else task_type()


__all__ = [
    "IDENTITY_INPUT",
    "IDENTITY_PROGRAM",
    "ROLES",
    "TASK_TYPES",
    "Abduction",
    "Deduction",
    "Induction",
    "Proposal",
    "ProposerPrompt",
    "Role",
    "Task",
    "TaskPool",
    "TaskType",
    "Validation",
    "get_task_type",
    "load_seed_tasks",
    "shipped_seed_path",
]
