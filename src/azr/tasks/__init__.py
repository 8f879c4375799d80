"""The task types of Absolute Zero, one module each, behind the common `TaskType` interface.

`TASK_TYPES` maps a name to its class; a new task type is a new module plus one line here and its template
files in each prompt format.
"""

from azr.tasks.abduction import Abduction
from azr.tasks.base import (
    IDENTITY_INPUT,
    IDENTITY_PROGRAM,
    ROLES,
    Proposal,
    ProposerPrompt,
    Role,
    Task,
    TaskType,
    Validation,
    done,
    gather,
    then,
)
from azr.tasks.deduction import Deduction
from azr.tasks.induction import Induction
from azr.tasks.seeds import load_seed_tasks, shipped_seed_path

TASK_TYPES: dict[str, type[TaskType]] = {cls.name: cls for cls in (Deduction, Abduction, Induction)}


def get_task_type(name: str, **options: int) -> TaskType:
    """An instance of the task type `name`; options go to its constructor (e.g. `n_inputs` for induction)."""
    if name not in TASK_TYPES:
        raise ValueError(f"unknown task type {name!r}; known: {', '.join(TASK_TYPES)}")
    return TASK_TYPES[name](**options)


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
    "TaskType",
    "Validation",
    "done",
    "gather",
    "get_task_type",
    "load_seed_tasks",
    "shipped_seed_path",
    "then",
]
