"""What every task type shares: the task record, a parsed proposal, a validation outcome and `TaskType`.

A task type plays both roles. As proposer it renders a prompt from buffer references, parses the response
into a `Proposal` and validates it with the executor into a `Task`. As solver it renders a prompt for a
`Task`, parses the answer and has the executor judge it. Every executor call returns a `Future`, so the
trainer can submit a whole batch and keep generating while the sandbox works.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from azr.futures import done, gather, then
from azr.parsing import BadFormat

if TYPE_CHECKING:
    from azr.executor import ExecResult, Executor, Verdict
    from azr.prompts import PromptFormat

Role = Literal["propose", "solve"]
ROLES: tuple[Role, ...] = ("propose", "solve")

IDENTITY_PROGRAM = "def f(a):\n    return a"
IDENTITY_INPUT = '"Hello world"'
SHORTCUT_REASON = "shortcut"
"""Why validation refuses a task under `reject_shortcut_tasks`: an answer ignoring its program solves it."""


@dataclass(frozen=True)
class Task:
    """A validated task. Program-and-input types fill `input`/`output` (o = f(i), both Python source);
    induction fills `inputs`/`outputs` (all pairs, in order) and `message`. `step` is the step that made it;
    `task_id` is its buffer's stable id once stored (None before)."""

    program: str
    input: str = ""
    output: str = ""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    message: str = ""
    step: int = 0
    task_id: int | None = None

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (input, output) pairs of an induction task."""
        return list(zip(self.inputs, self.outputs, strict=True))


@dataclass(frozen=True)
class Proposal:
    """A parsed proposer response, not yet validated: a program and one input, or (induction) the given
    program with several inputs and a message."""

    program: str
    input: str = ""
    inputs: tuple[str, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class Validation:
    """The outcome of validating a proposal: `task` is set when valid, else `reason` says why not."""

    task: Task | None
    reason: str = "ok"

    @property
    def valid(self) -> bool:
        return self.task is not None


@dataclass(frozen=True)
class ProposerPrompt:
    """A rendered proposer prompt, with the program it is about when the task type elaborates a given
    program (induction); the parser needs that program back."""

    text: str
    program: str | None = None
    references: tuple[Task, ...] = field(default=(), repr=False)


def invalid_reason(result: ExecResult) -> str:
    """A short reason for a failed run, e.g. `error: ZeroDivisionError`."""
    status = getattr(result.status, "value", str(result.status))
    return f"{status}: {result.error}" if result.error else str(status)


class TaskPool(Protocol):
    """Where proposer references come from: a task buffer, or any list of tasks that can be sampled."""

    def sample_references(self, rng: random.Random, k: int) -> list[Task]: ...


class TaskType(ABC):
    """One kind of reasoning task, both roles. Subclasses live in their own module and register
    themselves in `azr.tasks.TASK_TYPES` under `name`; template files are named `<name>_<role>.txt`.

    Everything that differs between task types lives behind these methods, so the trainer and the seeding
    loop never name a type: where a proposer's references come from (`proposer_references`), how many of
    them a prompt may not drop (`min_references`), which shipped seed set feeds it (`seed_set`, `accepts`),
    which answers solve a task without reading its program (`shortcut_answers`) and its options
    (`from_config`).
    """

    name: ClassVar[str]
    seed_set: ClassVar[str] = "io"
    """The shipped seed file this type reads with `seed_file: builtin` (see `azr.tasks.shipped_seed_path`)."""
    min_references: ClassVar[int] = 0
    """References a proposer prompt keeps even when it is over the token budget."""

    def __init__(self, reject_shortcut_tasks: bool = False) -> None:
        self.reject_shortcut_tasks = reject_shortcut_tasks
        """Validation also rejects a task that one of its `shortcut_answers` solves
        (`selfplay.reject_shortcut_tasks`)."""

    @classmethod
    def from_config(cls, selfplay: Any) -> TaskType:
        """An instance configured from a `SelfPlayConfig` (`reject_shortcut_tasks`, a type's own options)."""
        return cls(reject_shortcut_tasks=selfplay.reject_shortcut_tasks)

    def accepts(self, task: Task) -> bool:
        """Whether a task read from a seed file belongs to this type."""
        return not task.inputs

    def proposer_references(self, pools: Mapping[str, TaskPool], rng: random.Random, k: int) -> list[Task]:
        """The references a proposer prompt shows: k tasks of this type's own pool."""
        return pools[self.name].sample_references(rng, k)

    def shared_proposer_references(
        self, pools: Mapping[str, TaskPool], rng: random.Random, k: int, count: int
    ) -> list[list[Task]]:
        """References for `count` proposer prompts that share one draw (`selfplay.shared_references`), so
        that their prompts share a prefix: here the same k tasks for every prompt."""
        references = self.proposer_references(pools, rng, k)
        return [list(references) for _ in range(count)]

    def template(self, role: Role) -> str:
        """The template file stem for a role, e.g. `deduction_propose`."""
        return f"{self.name}_{role}"

    def stop(self, fmt: PromptFormat, role: Role) -> list[str]:
        """Stop strings for generating this role's responses in `fmt`."""
        return fmt.stop(self.template(role))

    @abstractmethod
    def seed_tasks(self) -> list[Task]:
        """The trivial task(s) a fresh buffer of this type starts from (the identity function)."""

    @abstractmethod
    def proposer_prompt(self, fmt: PromptFormat, references: Sequence[Task]) -> ProposerPrompt:
        """A proposer prompt showing `references` (tasks sampled from the buffer)."""

    @abstractmethod
    def parse_proposal(
        self, fmt: PromptFormat, prompt: ProposerPrompt, response: str
    ) -> Proposal | BadFormat:
        """The proposal in a proposer response, or why it could not be read. Never raises."""

    @abstractmethod
    def validate(self, executor: Executor, proposal: Proposal, step: int = 0) -> Future[Validation]:
        """Run the proposal in the sandbox; the Future holds the validated task or the reason it failed."""

    @abstractmethod
    def solver_prompt(self, fmt: PromptFormat, task: Task, examples: Sequence[Task] = ()) -> str:
        """A solver prompt for `task`. `examples` are solved buffer tasks shown first; formats that learn
        from worked examples (completion) render them, others ignore them."""

    @abstractmethod
    def parse_answer(self, fmt: PromptFormat, response: str) -> str | BadFormat:
        """The answer in a solver response, or why it could not be read. Never raises."""

    @abstractmethod
    def judge(self, executor: Executor, task: Task, answer: str) -> Future[Verdict]:
        """Have the executor check a parsed answer against `task`."""

    @abstractmethod
    def shortcut_answers(self, task: Task) -> list[str]:
        """Answers to `task` that need no reading of its program: the question given back, or a program
        that returns its argument or a constant. A task one of them solves teaches the solver a shortcut."""

    def shortcut_solved(self, executor: Executor, task: Task) -> Future[bool]:
        """Whether one of the `shortcut_answers` solves `task`, by this type's own check in the sandbox."""
        verdicts = gather([self.judge(executor, task, answer) for answer in self.shortcut_answers(task)])
        return then(verdicts, lambda judged: any(verdict.correct for verdict in judged))

    def submit_validation(
        self, executor: Executor, proposal: Proposal | BadFormat, step: int = 0
    ) -> Future[Validation]:
        """Validate one parsed proposal; an unparsed one resolves at once as invalid ("bad format"). With
        `reject_shortcut_tasks`, a valid task that a shortcut answer solves is invalid too ("shortcut")."""
        if isinstance(proposal, BadFormat):
            return done(Validation(None, f"bad format: {proposal.reason}"))
        validation = self.validate(executor, proposal, step)
        if not self.reject_shortcut_tasks:
            return validation
        return then(validation, lambda checked: self._unless_shortcut(executor, checked))

    def _unless_shortcut(self, executor: Executor, validation: Validation) -> Future[Validation] | Validation:
        if validation.task is None:
            return validation
        return then(
            self.shortcut_solved(executor, validation.task),
            lambda solved: Validation(None, SHORTCUT_REASON) if solved else validation,
        )

    def submit_judgement(
        self, executor: Executor, task: Task, answer: str | BadFormat
    ) -> Future[Verdict] | None:
        """Judge one parsed answer; an unparsed answer gets None (nothing to run)."""
        return None if isinstance(answer, BadFormat) else self.judge(executor, task, answer)

    def validate_batch(
        self, executor: Executor, proposals: Sequence[Proposal | BadFormat], step: int = 0
    ) -> list[Future[Validation]]:
        """Submit every proposal at once (see `submit_validation`)."""
        return [self.submit_validation(executor, proposal, step) for proposal in proposals]

    def judge_batch(
        self, executor: Executor, tasks: Sequence[Task], answers: Sequence[str | BadFormat]
    ) -> list[Future[Verdict] | None]:
        """Submit every answer at once (see `submit_judgement`)."""
        return [
            self.submit_judgement(executor, task, answer) for task, answer in zip(tasks, answers, strict=True)
        ]
