"""Deduction: given a program and an input, predict the output."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from azr.parsing import BadFormat, one_line
from azr.tasks.base import Task
from azr.tasks.program_io import ProgramIOTaskType

if TYPE_CHECKING:
    from azr.executor import Executor, Verdict
    from azr.prompts import PromptFormat


class Deduction(ProgramIOTaskType):
    """The solver sees (p, i) and answers o; correct when it equals f(i) as a value."""

    name = "deduction"

    def solver_prompt(self, fmt: PromptFormat, task: Task, examples: Sequence[Task] = ()) -> str:
        shown = "\n\n".join(
            fmt.render(
                "deduction_example",
                program=example.program,
                input=one_line(example.input),
                output=one_line(example.output),
            )
            for example in examples
        )
        return fmt.render(
            self.template("solve"), examples=shown, program=task.program, input=one_line(task.input)
        )

    def parse_answer(self, fmt: PromptFormat, response: str) -> str | BadFormat:
        return fmt.value(self.template("solve"), response)

    def judge(self, executor: Executor, task: Task, answer: str) -> Future[Verdict]:
        return executor.check_deduction(task.output, answer)

    def shortcut_answers(self, task: Task) -> list[str]:
        """The input given back as the output."""
        return [task.input]
