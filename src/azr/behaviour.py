"""What a program does, as a key: its outputs on a fixed set of canonical arguments of its input's types.

Two programs with one key behave alike on typical inputs of those types, however differently they are
written. `selfplay.distinct_behaviour` uses the key to tell a proposal from the tasks its buffer has, where
`azr.parsing.program_key` compares program text: a 0.5B proposer narrowed to one behaviour (a number in,
that number plus one or two out) under ever new thresholds and names (benchmarks/RESULTS.md, issue 17),
each a new program text. The idea is AlphaCode's clustering of sampled programs by their outputs.

The canonical arguments depend only on the types of the task's own arguments, never on their values, so
a task's key does not change with the input it was proposed with. A program that runs on too few of them
(it asserts a format the canonical values lack) gets no key, and its text decides instead.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from azr.futures import done, gather, then
from azr.parsing import MAX_EXPRESSION_CHARS, program_key

if TYPE_CHECKING:
    from azr.executor import ExecResult, Executor
    from azr.tasks import Task

CANONICAL_CALLS = 8
"""Calls per key: enough to tell `x + 1` from `x + 2` and a threshold inside 0..100 from one outside."""
MIN_RUNNING_CALLS = 2
"""Calls that must return a value for a key: a program that refuses nearly every canonical argument
would otherwise share the all-errors key with every other such program."""

_INTS = [0, 1, 2, 3, 5, 10, -4, 100]
_FLOATS = [0.0, 0.5, 1.5, -2.25, 3.0, 10.0, 100.5, -0.1]
_STRINGS = ["", "a", "ab", "abc", "hello world", "Aab1", "racecar", "1234"]
_INT_LISTS = [[], [1], [2, 1], [3, 1, 2], [1, 2, 2, 5], [-1, 0, 4], [5, 4, 3, 2, 1], [10, 20]]
_STRING_LISTS = [[], ["a"], ["b", "a"], ["abc", "d", "ef"], ["x", "x"], ["hello", "world"], [""], ["1", "22"]]
_DICTS = [{}, {"a": 1}, {"a": 1, "b": 2}, {"b": 3, "a": -1}, {"x": 0}, {"a": 5, "c": 5}, {"k": 10}, {"z": -2}]


def _canonical_values(value: Any) -> list[Any] | None:
    """CANONICAL_CALLS values of `value`'s type (a list's by its first element), or None for a type
    without a canonical set (nested or mixed containers, objects)."""
    if isinstance(value, bool):
        return [index % 2 == 1 for index in range(CANONICAL_CALLS)]
    if isinstance(value, int):
        return list(_INTS)
    if isinstance(value, float):
        return list(_FLOATS)
    if isinstance(value, str):
        return list(_STRINGS)
    if value is None:
        return [None] * CANONICAL_CALLS
    if isinstance(value, dict):
        return [dict(d) for d in _DICTS]
    if isinstance(value, list | tuple | set):
        items = list(value)
        if all(isinstance(item, str) for item in items) and items:
            lists = _STRING_LISTS
        elif all(isinstance(item, int) and not isinstance(item, bool) for item in items):
            lists = _INT_LISTS
        else:
            return None
        return [type(value)(items) for items in lists]
    return None


def canonical_arguments(input_expr: str) -> list[str] | None:
    """CANONICAL_CALLS argument lists (source text, as a task's `input`) with the types of `input_expr`'s
    arguments, or None when one of them is not a literal of a type with a canonical set. Argument j of
    call i takes canonical value (i + j) mod CANONICAL_CALLS, so two arguments of one type differ."""
    if len(input_expr) > MAX_EXPRESSION_CHARS:
        return None
    try:
        call = ast.parse(f"f({input_expr})", mode="eval").body
        arguments = [ast.literal_eval(argument) for argument in call.args]  # type: ignore[attr-defined]
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        return None
    if not arguments or call.keywords:  # type: ignore[attr-defined]
        return None
    values = [_canonical_values(argument) for argument in arguments]
    if any(column is None for column in values):
        return None
    return [
        ", ".join(repr(column[(call_index + j) % CANONICAL_CALLS]) for j, column in enumerate(values))  # type: ignore[index]
        for call_index in range(CANONICAL_CALLS)
    ]


def key_of_results(results: Sequence[ExecResult]) -> str | None:
    """The behaviour key of a program's results on the canonical arguments: each output, or the way the
    call failed (the status, not the message, which names the program's own text). None when fewer than
    MIN_RUNNING_CALLS calls returned a value."""
    if sum(result.ok for result in results) < MIN_RUNNING_CALLS:
        return None
    return json.dumps([result.output if result.ok else f"!{result.status}" for result in results])


def behaviour_cache_key(task: Task) -> str:
    """What a task's behaviour key depends on: its program and the canonical arguments of its input's
    types (two tasks with one cache key have one behaviour key)."""
    return json.dumps([task.program, canonical_arguments(task.inputs[0] if task.inputs else task.input)])


def submit_behaviour_key(executor: Executor, task: Task) -> Future[str | None]:
    """Run `task`'s program on the canonical arguments of its (first) input's types in the sandbox;
    the Future holds its behaviour key, or None where it has none."""
    arguments = canonical_arguments(task.inputs[0] if task.inputs else task.input)
    if arguments is None:
        return done(None)
    return then(gather(executor.validate_inputs(task.program, arguments)), key_of_results)


def copy_key(program: str, behaviour: str | None) -> str:
    """The key two tasks share when they are one program: its behaviour key where it has one (from
    `submit_behaviour_key`), else its text up to names and layout (`azr.parsing.program_key`)."""
    return f"behaviour {behaviour}" if behaviour is not None else f"text {program_key(program)}"
