"""Abduction: given a program and an output, find an input that produces it."""

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


class Abduction(ProgramIOTaskType):
    """The solver sees (p, o) and answers some i'; correct when f(i') equals o (any such input counts)."""

    name = "abduction"

    def solver_prompt(self, fmt: PromptFormat, task: Task, examples: Sequence[Task] = ()) -> str:
        shown = "\n\n".join(
            fmt.render(
                "abduction_example",
                program=example.program,
                input=one_line(example.input),
                output=one_line(example.output),
            )
            for example in examples
        )
        return fmt.render(
            self.template("solve"), examples=shown, program=task.program, output=one_line(task.output)
        )

    def parse_answer(self, fmt: PromptFormat, response: str) -> str | BadFormat:
        return fmt.arguments(self.template("solve"), response)

    def judge(self, executor: Executor, task: Task, answer: str) -> Future[Verdict]:
        return executor.check_abduction(task.program, answer, task.output)

    def shortcut_answers(self, task: Task) -> list[str]:
        """The output given back as the input."""
        return [task.output]
