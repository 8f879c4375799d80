"""Shared proposer side of the two program-and-input task types (deduction and abduction).

Both ask the proposer for a new program and one input, shown K reference triplets, and validate the pair by
running it; they differ only in what the solver is given and asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from azr.futures import then
from azr.parsing import BadFormat, one_line
from azr.tasks.base import (
    IDENTITY_INPUT,
    IDENTITY_PROGRAM,
    Proposal,
    ProposerPrompt,
    Task,
    TaskType,
    Validation,
    invalid_reason,
)

if TYPE_CHECKING:
    from azr.executor import ExecResult, Executor
    from azr.prompts import PromptFormat

IDENTITY_OUTPUT = "'Hello world'"


class ProgramIOTaskType(TaskType):
    """A task type whose proposals are a program and one input, validated into a (p, i, o) triplet."""

    def seed_tasks(self) -> list[Task]:
        return [Task(IDENTITY_PROGRAM, IDENTITY_INPUT, IDENTITY_OUTPUT)]

    def proposer_prompt(self, fmt: PromptFormat, references: Sequence[Task]) -> ProposerPrompt:
        shown = "\n\n".join(
            fmt.render(
                "io_reference", program=task.program, input=one_line(task.input), output=one_line(task.output)
            )
            for task in references
        )
        return ProposerPrompt(fmt.render(self.template("propose"), references=shown), None, tuple(references))

    def parse_proposal(
        self, fmt: PromptFormat, prompt: ProposerPrompt, response: str
    ) -> Proposal | BadFormat:
        parsed = fmt.program_and_input(self.template("propose"), response)
        if isinstance(parsed, BadFormat):
            return parsed
        program, input_expr = parsed
        return Proposal(program=program, input=input_expr)

    def validate(self, executor: Executor, proposal: Proposal, step: int = 0) -> Future[Validation]:
        def to_validation(result: ExecResult) -> Validation:
            if not result.ok or result.output is None:
                return Validation(None, invalid_reason(result))
            return Validation(Task(proposal.program, proposal.input, result.output, step=step))

        return then(executor.validate(proposal.program, proposal.input), to_validation)
