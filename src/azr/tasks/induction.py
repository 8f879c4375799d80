"""Induction: given a message and half of N (input, output) pairs, write a program that fits them all.

The proposer is shown one program (sampled from the program-and-input buffers) and asked for N inputs and a
message hinting at what the program does; the executor computes the outputs. The solver sees the message
and the first half of the pairs and is judged on the held-out second half.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from azr.futures import gather, then
from azr.parsing import BadFormat, normalize_arguments, one_line
from azr.tasks.base import (
    IDENTITY_PROGRAM,
    Proposal,
    ProposerPrompt,
    Task,
    TaskPool,
    TaskType,
    Validation,
)

if TYPE_CHECKING:
    from azr.executor import ExecResult, Executor, Verdict
    from azr.prompts import PromptFormat

# The identity seed's inputs are their own reprs, so the outputs below are exact.
IDENTITY_INPUTS = (
    "'Hello world'",
    "1",
    "-2.5",
    "[1, 2, 3]",
    "(4, 'b')",
    "{'k': 0}",
    "True",
    "None",
    "''",
    "'a b c'",
)


def one_line_message(message: str) -> str:
    """A message on one line: formats show it as a single comment or block line."""
    return " ".join(message.split())


def distinct(inputs: Sequence[str]) -> list[str]:
    """Inputs without duplicates (same canonical form, e.g. `"a"` and `'a'`), first occurrence kept."""
    kept: dict[str, str] = {}
    for inp in inputs:
        kept.setdefault(normalize_arguments(inp), inp)
    return list(kept.values())


class Induction(TaskType):
    """Induction with `n_inputs` (N) pairs per task: N/2 shown to the solver, the rest held out."""

    name = "induction"
    seed_set = "induction"
    min_references = 1  # the program the inputs are for
    program_sources = ("deduction", "abduction")
    """Buffers whose programs induction proposals are about (its own, when none of them is trained)."""

    def __init__(self, n_inputs: int = 10, reject_shortcut_tasks: bool = False) -> None:
        if n_inputs < 2:
            raise ValueError("induction needs at least 2 inputs: one shown, one held out")
        super().__init__(reject_shortcut_tasks)
        self.n_inputs = n_inputs

    @classmethod
    def from_config(cls, selfplay: Any) -> Induction:
        return cls(selfplay.induction_inputs, reject_shortcut_tasks=selfplay.reject_shortcut_tasks)

    def accepts(self, task: Task) -> bool:
        return bool(task.inputs)

    def proposer_references(self, pools: Mapping[str, TaskPool], rng: random.Random, k: int) -> list[Task]:
        """One program from a program-and-input pool to write inputs for, then up to k − 1 induction tasks
        of this type's own pool as worked examples."""
        target = self._target(pools, rng)
        return target + pools[self.name].sample_references(rng, max(k - 1, 0))

    def shared_proposer_references(
        self, pools: Mapping[str, TaskPool], rng: random.Random, k: int, count: int
    ) -> list[list[Task]]:
        """One draw of k − 1 worked examples shared by the `count` prompts (they come first in the prompt),
        and a program of its own for each prompt: sharing the program would make every proposal of the
        step about one program."""
        examples = pools[self.name].sample_references(rng, max(k - 1, 0))
        return [self._target(pools, rng) + examples for _ in range(count)]

    def _target(self, pools: Mapping[str, TaskPool], rng: random.Random) -> list[Task]:
        """The program a proposal writes inputs for, from a program-and-input pool (its own, if none)."""
        sources = [name for name in self.program_sources if name in pools] or [self.name]
        return pools[rng.choice(sources)].sample_references(rng, 1)

    def seed_tasks(self) -> list[Task]:
        inputs = IDENTITY_INPUTS[: self.n_inputs]
        return [
            Task(IDENTITY_PROGRAM, inputs=inputs, outputs=inputs, message="Returns its argument unchanged.")
        ]

    @staticmethod
    def split(task: Task) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(shown, held out) pairs of a task: the first half is shown."""
        pairs = task.pairs
        half = len(pairs) // 2
        return pairs[:half], pairs[half:]

    def _pairs(self, fmt: PromptFormat, pairs: Sequence[tuple[str, str]], template: str = "pair") -> str:
        return "\n".join(
            fmt.render(template, input=one_line(inp), output=one_line(out)) for inp, out in pairs
        )

    def proposer_prompt(self, fmt: PromptFormat, references: Sequence[Task]) -> ProposerPrompt:
        """`references[0]` is the program to write inputs for (any buffer task); the rest are induction
        tasks shown as worked examples."""
        if not references:
            raise ValueError("an induction proposer prompt needs a program: pass at least one reference")
        target, examples = references[0], references[1:]
        # A format may lay the proposer's pairs out differently from the solver's (completion v3 indents
        # them in a test function).
        pair_template = "induction_propose_pair" if fmt.has_template("induction_propose_pair") else "pair"
        shown = "\n\n".join(
            fmt.render(
                "induction_propose_example",
                program=task.program,
                message=one_line_message(task.message),
                pairs=self._pairs(fmt, task.pairs[: self.n_inputs], pair_template),
            )
            for task in examples
        )
        text = fmt.render(
            self.template("propose"), examples=shown, program=target.program, count=str(self.n_inputs)
        )
        return ProposerPrompt(text, target.program, tuple(references))

    def parse_proposal(
        self, fmt: PromptFormat, prompt: ProposerPrompt, response: str
    ) -> Proposal | BadFormat:
        if prompt.program is None:
            return BadFormat("induction prompt without a program")
        parsed = fmt.inputs_and_message(self.template("propose"), response)
        if isinstance(parsed, BadFormat):
            return parsed
        inputs, message = parsed
        # Duplicates cannot make distinct pairs; inputs beyond 2N only cost sandbox time.
        return Proposal(prompt.program, inputs=tuple(distinct(inputs)[: 2 * self.n_inputs]), message=message)

    def validate(self, executor: Executor, proposal: Proposal, step: int = 0) -> Future[Validation]:
        inputs = distinct(proposal.inputs)

        def to_validation(results: list[ExecResult]) -> Validation:
            pairs = [
                (inp, result.output)
                for inp, result in zip(inputs, results, strict=True)
                if result.ok and result.output is not None
            ]
            if len(pairs) < self.n_inputs:
                return Validation(None, f"only {len(pairs)} valid distinct inputs, need {self.n_inputs}")
            kept = pairs[: self.n_inputs]
            return Validation(
                Task(
                    proposal.program,
                    inputs=tuple(inp for inp, _ in kept),
                    outputs=tuple(out for _, out in kept),
                    message=proposal.message,
                    step=step,
                )
            )

        return then(gather(executor.validate_inputs(proposal.program, inputs)), to_validation)

    def solver_prompt(self, fmt: PromptFormat, task: Task, examples: Sequence[Task] = ()) -> str:
        shown = "\n\n".join(
            fmt.render(
                "induction_solve_example",
                message=one_line_message(example.message),
                pairs=self._pairs(fmt, self.split(example)[0]),
                program=example.program,
            )
            for example in examples
        )
        pairs = self._pairs(fmt, self.split(task)[0])
        return fmt.render(
            self.template("solve"), examples=shown, message=one_line_message(task.message), pairs=pairs
        )

    def parse_answer(self, fmt: PromptFormat, response: str) -> str | BadFormat:
        return fmt.program(self.template("solve"), response)

    def judge(self, executor: Executor, task: Task, answer: str) -> Future[Verdict]:
        return executor.check_induction(answer, self.split(task)[1])

    def shortcut_answers(self, task: Task) -> list[str]:
        """A program that returns its (first) argument, and one that returns the first shown output."""
        shown, _ = self.split(task)
        return ["def f(*args):\n    return args[0]", f"def f(*args):\n    return {shown[0][1]}"]
