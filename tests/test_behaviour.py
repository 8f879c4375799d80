"""Behaviour keys: canonical arguments by type, and programs told apart by what they do in the sandbox."""

from __future__ import annotations

import ast

import pytest

from azr.behaviour import (
    CANONICAL_CALLS,
    behaviour_cache_key,
    canonical_arguments,
    key_of_results,
    submit_behaviour_key,
)
from azr.executor import ExecResult, Executor
from azr.executor.results import Status
from azr.tasks import Task


def arguments_of(text: str) -> list[object]:
    return [ast.literal_eval(argument) for argument in ast.parse(f"f({text})", mode="eval").body.args]


@pytest.mark.parametrize(
    ("input_expr", "types"),
    [
        ("112", [int]),
        ("-3.5", [float]),
        ("'a1b2c3'", [str]),
        ("True", [bool]),
        ("[4, 5, 6], 2", [list, int]),
        ("('x', 'y')", [tuple]),
        ("{'k': 1}, 'k'", [dict, str]),
        ("{1, 2}", [set]),
        ("None", [type(None)]),
    ],
)
def test_canonical_arguments_keep_each_arguments_type(input_expr: str, types: list[type]) -> None:
    calls = canonical_arguments(input_expr)
    assert calls is not None and len(calls) == CANONICAL_CALLS
    for call in calls:
        assert [type(value) for value in arguments_of(call)] == types


def test_canonical_arguments_depend_on_types_not_values() -> None:
    assert canonical_arguments("5") == canonical_arguments("112")
    assert canonical_arguments("['q'], 0") == canonical_arguments("['a', 'b'], 9")
    assert canonical_arguments("[1]") != canonical_arguments("['a']")
    # Two arguments of one type take different values in each call.
    assert all(len(set(arguments_of(call))) == 2 for call in canonical_arguments("1, 2"))
    # The calls differ from each other, so they can tell programs apart.
    assert len(set(canonical_arguments("'s'"))) == CANONICAL_CALLS


@pytest.mark.parametrize("input_expr", ["x", "[[1, 2]]", "[1, 'a']", "n=3", "*[1]", "", "f(1)", "(1"])
def test_no_canonical_arguments_for_what_has_no_canonical_set(input_expr: str) -> None:
    assert canonical_arguments(input_expr) is None


def test_a_key_needs_two_calls_that_return_and_names_failures_by_status_only() -> None:
    ok = ExecResult(Status.OK, output="1")
    raised = ExecResult(Status.ERROR, error="ValueError: number 7 is too small")
    other_message = ExecResult(Status.ERROR, error="AssertionError")
    assert key_of_results([ok, raised, raised]) is None
    assert key_of_results([ok, ok, raised]) == key_of_results([ok, ok, other_message])
    assert key_of_results([ok, ok, raised]) != key_of_results([ok, ok, ExecResult(Status.TIMEOUT)])


@pytest.fixture(scope="module")
def executor():
    with Executor() as ex:
        yield ex


def key(executor: Executor, program: str, input_expr: str) -> str | None:
    return submit_behaviour_key(executor, Task(program, input_expr, "")).result()


def test_programs_that_act_alike_share_a_key_however_written(executor: Executor) -> None:
    plain = key(executor, "def f(n):\n    return n + 1", "7")
    thresholded = key(executor, "def f(x):\n    if x > 1234:\n        return x - 1\n    return 1 + x", "200")
    assert plain is not None and plain == thresholded
    assert key(executor, "def f(n):\n    return n + 2", "7") != plain
    assert key(executor, "def f(n):\n    if n > 4:\n        return n - 1\n    return n + 1", "7") != plain
    # The same program on other argument types is another behaviour.
    assert key(executor, "def f(n):\n    return n * 2", "7") != key(
        executor, "def f(n):\n    return n * 2", "'ab'"
    )


def test_a_program_refusing_nearly_every_canonical_argument_has_no_key(executor: Executor) -> None:
    strict = "def f(s):\n    assert len(s) > 20\n    return s[::-1]"
    assert key(executor, strict, "'" + "z" * 25 + "'") is None
    assert key(executor, "def f(a):\n    return a", "[[1], [2]]") is None  # no canonical set


def test_the_cache_key_follows_program_and_input_types() -> None:
    program = "def f(n):\n    return n"
    assert behaviour_cache_key(Task(program, "1", "1")) == behaviour_cache_key(Task(program, "99", "99"))
    assert behaviour_cache_key(Task(program, "1", "1")) != behaviour_cache_key(Task(program, "'1'", "'1'"))
    induction = Task(program, inputs=("3", "4"), outputs=("3", "4"))
    assert behaviour_cache_key(induction) == behaviour_cache_key(Task(program, "5", "5"))
