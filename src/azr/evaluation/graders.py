"""Grading an extracted answer: every check of model-written code runs in the executor's sandbox, every math
answer goes to math-verify in a worker process. Nothing here evaluates a model string in the host.

`submit_grade` starts the checks and returns a `Future[Grade]` at once, so that a caller can submit every
problem of a benchmark before waiting on any (the sandbox workers then run in parallel).
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from azr import probe
from azr.evaluation.benchmarks import Problem
from azr.evaluation.math_grading import MathGrader
from azr.executor import Executor
from azr.futures import done, gather, then

DEFAULT_FLOAT_ATOL = 1e-6
"""Float outputs of EvalPlus-style problems with `atol == 0` are compared within this tolerance."""


@dataclass(frozen=True)
class Grade:
    """The verdict on one answer. `status` is the executor's or math grader's status, or "no_answer"."""

    correct: bool
    status: str
    error: str | None = None
    seconds: float = 0.0  # time spent in the sandbox or in math-verify
    details: dict[str, Any] = field(default_factory=dict)


def _single(verdict: Any) -> Grade:
    return Grade(verdict.correct, str(verdict.status), verdict.error, verdict.seconds)


def _base_and_plus(verdicts: list[Any]) -> Grade:
    base, plus = verdicts
    failed = base if not base.correct else plus
    return Grade(
        correct=base.correct and plus.correct,
        status=str(failed.status),
        error=failed.error,
        seconds=base.seconds + plus.seconds,
        details={"base_correct": base.correct, "plus_correct": plus.correct},
    )


# The comparison helper of EvalPlus-style tests; it runs inside the sandbox, after the candidate program.
# Inputs arrive as JSON, which has no tuples or complex numbers: when the reference solution rejects an
# input as read, the same input is retried with list arguments as tuples, then with numeric strings as
# complex numbers, and the first form the reference accepts is the test. Outputs that are not plain data
# (a `re.Match`, say) are compared by whether they are None, the only thing such outputs are checked for.
_DIFFERENTIAL_TEST = """
import copy as _azr_copy
import json as _azr_json
import math as _azr_math

_AZR_PLAIN = (int, float, complex, str, bytes, bool, type(None), list, tuple, dict, set, frozenset)


def _azr_close(want, got, atol):
    if not isinstance(want, _AZR_PLAIN):
        return (want is None) == (got is None)
    if isinstance(want, float) or isinstance(got, float):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (want, got)):
            return False
        if _azr_math.isnan(want) or _azr_math.isnan(got):
            return _azr_math.isnan(want) and _azr_math.isnan(got)
        return want == got or abs(want - got) <= atol
    if isinstance(want, (list, tuple)) and type(want) is type(got) and len(want) == len(got):
        return all(_azr_close(w, g, atol) for w, g in zip(want, got))
    return want == got


def _azr_as_complex(value):
    try:
        return complex(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _azr_forms(arguments):
    yield arguments
    yield [tuple(a) if isinstance(a, list) else a for a in arguments]
    yield [_azr_as_complex(a) for a in arguments]


_azr_reference = {{"__name__": "__reference__"}}
exec(compile({reference!r}, "<reference>", "exec"), _azr_reference)
_azr_expected = _azr_reference[{entry_point!r}]
_azr_candidate = {entry_point}
for _azr_number, _azr_raw in enumerate(_azr_json.loads({inputs!r})):
    for _azr_args in _azr_forms(_azr_raw):
        try:
            _azr_want = _azr_expected(*_azr_copy.deepcopy(_azr_args))
        except Exception:
            continue
        _azr_got = _azr_candidate(*_azr_copy.deepcopy(_azr_args))
        assert _azr_close(_azr_want, _azr_got, {atol!r}), f"{label} input {{_azr_number}}: wrong output"
        break
"""

_STDIO_TEST = """
import io as _azr_io
import json as _azr_json
import sys as _azr_sys


def _azr_lines(text):
    return [line.rstrip() for line in text.rstrip().splitlines()]


_azr_code = compile({program!r}, "<solution>", "exec")
for _azr_number, (_azr_stdin, _azr_expected) in enumerate(_azr_json.loads({tests!r})):
    _azr_sys.stdin, _azr_out = _azr_io.StringIO(_azr_stdin), _azr_io.StringIO()
    _azr_saved, _azr_sys.stdout = _azr_sys.stdout, _azr_out
    try:
        exec(_azr_code, {{"__name__": "__main__"}})
    except SystemExit:
        pass
    finally:
        _azr_sys.stdout = _azr_saved
    assert _azr_lines(_azr_out.getvalue()) == _azr_lines(_azr_expected), f"test {{_azr_number}}: wrong output"
"""


def differential_test_code(problem: Problem, inputs: list[Any], label: str) -> str:
    """Test code that calls the candidate and the reference solution on each input and compares results."""
    return _DIFFERENTIAL_TEST.format(
        reference=problem.reference,
        entry_point=problem.entry_point,
        inputs=json.dumps(inputs),
        atol=problem.atol or DEFAULT_FLOAT_ATOL,
        label=label,
    )


def stdio_test_code(program: str, tests: list[tuple[str, str]]) -> str:
    """Test code that runs `program` as a script on each stdin and compares its stdout line by line."""
    return _STDIO_TEST.format(program=program, tests=json.dumps(tests))


def submit_grade(
    problem: Problem, answer: str | None, executor: Executor, math_grader: MathGrader
) -> Future[Grade]:
    """Start grading `answer`, the extracted output, input, program or math answer (None: none found)."""
    if answer is None:
        return done(Grade(False, "no_answer", "no answer could be extracted from the response"))
    if problem.kind == "selfplay":
        return then(probe.judge(executor, problem.task_type, problem.task, answer), _single)
    if problem.kind == "output":
        return then(executor.check_deduction(problem.gold_output, answer), _single)
    if problem.kind == "input" and not answer.strip():
        # The executor's abduction check needs an argument; a call without one is checked as a test.
        return then(executor.run_tests(problem.question, f"assert f() == {problem.gold_output}"), _single)
    if problem.kind == "input":
        return then(executor.check_abduction(problem.question, answer, problem.gold_output), _single)
    if problem.kind == "math":
        return then(math_grader.submit(problem.reference, answer), _single)
    if problem.kind == "stdio":
        return then(executor.run_tests("", stdio_test_code(answer, problem.stdio_tests)), _single)
    if problem.base_inputs:
        base = executor.run_tests(answer, differential_test_code(problem, problem.base_inputs, "base"))
        if not problem.plus_inputs:
            return then(base, _single)
        plus = executor.run_tests(answer, differential_test_code(problem, problem.plus_inputs, "plus"))
        return then(gather([base, plus]), _base_and_plus)
    return then(executor.run_tests(answer, problem.test_code), _single)
