"""What the executor returns: a status for every run and a verdict for every answer check."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """How a run ended. Only `ok` means the program ran and produced a usable output."""

    OK = "ok"
    ERROR = "error"  # the program raised (error holds the exception type) or died on a signal
    TIMEOUT = "timeout"  # CPU budget or wall-clock cap exceeded
    MEMORY = "memory"  # MemoryError under the address-space limit
    BANNED = "banned"  # rejected by the AST check before running (also: no `f`, syntax error)
    NONDETERMINISTIC = "nondeterministic"  # two runs in separate processes disagreed
    BAD_OUTPUT = "bad_output"  # output not a plain comparable value, or its repr too long
    SANDBOX_ERROR = "sandbox_error"  # the sandbox itself failed (worker died, protocol error)


@dataclass(frozen=True)
class ExecResult:
    """Outcome of running (validating) a program on one input; `output` is the repr when status is ok."""

    status: Status
    output: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status is Status.OK


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking an answer: `correct` is only ever True with status ok."""

    correct: bool
    status: Status
    error: str | None = None
    seconds: float = 0.0
