"""Parsing never raises, stays bounded on huge inputs and reads well-formed answers exactly."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azr.parsing import (
    MAX_RESPONSE_CHARS,
    BadFormat,
    assert_call,
    calls_of_f,
    check_arguments,
    check_program,
    check_value,
    fenced_block,
    fenced_blocks,
    normalize_arguments,
    normalize_program,
    number_literal,
    program_key,
    think_answer,
)
from azr.prompts import get_format
from azr.prompts.formats import inputs_and_message_of
from azr.tasks import TASK_TYPES, Proposal, ProposerPrompt, get_task_type

FORMATS = ("r1", "completion")

# Fragments models really emit, so random strings hit the parsers' interesting paths often.
FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "```",
    "```python\n",
    "```input\n",
    "```output\n",
    "```message\n",
    "def f(",
    "def f(a):\n    return a\n",
    "assert f(",
    ") == ",
    "\n",
    "    ",
    "#",
    "'",
    '"',
    "(",
    ")",
    "[",
    "]",
    "\x00",
    "1",
    "x",
    "𝔣",
    "fn main() {}",
    "lambda: 0",
]
model_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=40).map("".join),
)


def every_parser(text: str) -> list[object]:
    """Run every parse entry point, for each format and task type, on `text`."""
    results: list[object] = [
        think_answer(text),
        fenced_blocks(text),
        fenced_block(text, ("python",)),
        check_program(text),
        check_value(text),
        check_arguments(text),
        assert_call(text),
        calls_of_f(text),
        normalize_program(text),
        normalize_arguments(text),
    ]
    for format_name in FORMATS:
        fmt = get_format(format_name)
        for name in TASK_TYPES:
            task_type = get_task_type(name)
            prompt = ProposerPrompt("prompt", program="def f(a):\n    return a")
            results.append(task_type.parse_proposal(fmt, prompt, text))
            results.append(task_type.parse_answer(fmt, text))
    return results


@settings(max_examples=300, deadline=None)
@given(model_text)
def test_parsers_never_raise_and_return_parsed_or_bad_format(text: str) -> None:
    every_parser(text)
    for format_name in FORMATS:
        fmt = get_format(format_name)
        for name in TASK_TYPES:
            task_type = get_task_type(name)
            proposal = task_type.parse_proposal(fmt, ProposerPrompt("p", program="def f(a): return a"), text)
            assert isinstance(proposal, Proposal | BadFormat)
            if isinstance(proposal, Proposal):
                assert check_program(proposal.program) == proposal.program
                for arguments in (proposal.input,) if proposal.input else proposal.inputs:
                    assert check_arguments(arguments) == arguments
            answer = task_type.parse_answer(fmt, text)
            assert isinstance(answer, str | BadFormat)
            if isinstance(answer, str):
                assert "\x00" not in answer


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00" * 1000,
        "```" * 50_000,
        "<think>" * 50_000,
        "<answer>" * 50_000,
        "(" * 200_000,
        "assert f(" + "[" * 100_000,
        "assert f(1) == " * 20_000,
        "def f(a):\n" + "    a = a + 1\n" * 30_000,
        "<think>x</think><answer>" + "```input\n1\n```\n" * 20_000 + "</answer>",
    ],
)
def test_parsers_are_bounded_on_huge_input(text: str) -> None:
    started = time.perf_counter()
    every_parser(text)
    assert time.perf_counter() - started < 2.0


def test_think_answer_reads_the_answer() -> None:
    assert think_answer("<think> hmm </think>\n <answer>42</answer>") == "42"
    assert think_answer("<think>a</think><answer>42") == "42"  # stop string left out by the backend
    assert isinstance(think_answer("<answer>42</answer>"), BadFormat)
    assert isinstance(think_answer("<think>a</think> so <answer>42</answer>"), BadFormat)
    assert isinstance(think_answer("<think>a</think><answer><answer>1</answer></answer>"), BadFormat)


def test_fenced_blocks_drop_unclosed_fences() -> None:
    text = "```python\ndef f(a):\n    return a\n```\ntext\n```input\n1\n```\n```output\nunclosed"
    assert fenced_blocks(text) == [("python", "def f(a):\n    return a\n"), ("input", "1\n")]
    assert fenced_block("```python\nA\n```\n```python\nB\n```", ("python",)) == "B\n"


def test_checks_accept_python_and_reject_the_rest() -> None:
    assert check_program("\ndef f(a):\n    return a\n\n") == "def f(a):\n    return a"
    assert isinstance(check_program("fn main() {}"), BadFormat)
    assert isinstance(check_program("def f(a):\n    return a\x00"), BadFormat)
    assert check_value(" [1, 'a'] ") == "[1, 'a']"
    assert isinstance(check_value("1 +"), BadFormat)
    assert check_arguments("'a', 3") == "'a', 3"
    assert check_arguments("x=[1]") == "x=[1]"
    assert isinstance(check_arguments("1), g(2"), BadFormat)
    assert isinstance(check_arguments(""), BadFormat)


def test_assert_call_reads_arguments_and_expected_value() -> None:
    assert assert_call('assert f("a", 1) == [2]') == ("'a', 1", "[2]")
    assert assert_call("f(x=1)") == ("x=1", None)
    assert assert_call("assert g(1) == 2") is None
    assert assert_call("assert f(1) != 2") is None
    assert assert_call("assert f() == 2") is None


def test_calls_of_f_finds_calls_anywhere_in_a_line() -> None:
    assert calls_of_f("result = f(42)") == ["42"]
    assert calls_of_f("print(f('a', 1), f(x=2))") == ["'a', 1", "x=2"]
    assert calls_of_f("g(1)") == [] and calls_of_f("f(") == []


def test_normalisation_ignores_layout_and_quotes() -> None:
    assert normalize_program("def f(a):\n\n    # comment\n    return a") == normalize_program(
        "def f(a): return a"
    )
    assert normalize_arguments('"a" ,1') == normalize_arguments("'a', 1")


def test_responses_are_clipped_before_parsing() -> None:
    long_tail = "x" * (2 * MAX_RESPONSE_CHARS)
    assert think_answer("<think>a</think><answer>1</answer>" + long_tail) == "1"


def test_completion_proposal_input_may_come_from_any_top_level_call_of_f():
    from azr.prompts import get_format

    fmt = get_format("completion")
    response = "s):\n    return s[::-1]\ndef buff(x):\n    return f(x)\nprint(f('abc'))  # cba\n```"
    assert fmt.program_and_input("deduction_propose", response) == (
        "def f(s):\n    return s[::-1]\ndef buff(x):\n    return f(x)",
        "'abc'",
    )
    assert fmt.program_and_input("deduction_propose", "x):\n    return x\ny = f(3)") == (
        "def f(x):\n    return x",
        "3",
    )
    assert isinstance(fmt.program_and_input("deduction_propose", "x):\n    return f(x)\n"), BadFormat)


def test_completion_induction_proposals_take_calls_anywhere_and_the_first_comment() -> None:
    text = "assert f(1) == ???\nprint(f('a'), f([2, 3]))\n# Doubles it.\n# a second comment\nf(4)"
    assert inputs_and_message_of(text) == (["1", "'a'", "[2, 3]", "4"], "Doubles it.")
    assert inputs_and_message_of("assert f(1) == 2\nassert f(2) == 4") == BadFormat("no `# message` line")
    assert inputs_and_message_of("# Doubles it.\nf(x y)") == BadFormat("no readable `assert f(...)` line")


def test_programs_compare_without_layout_comments_or_their_own_names():
    identity = program_key("def f(a):\n    return a")
    assert program_key("def f(abc):\n    # the input, unchanged\n    return (abc)") == identity
    counted = "def f(people):\n    n = 0\n    for p in people:\n        n += 1\n    return len(people) - n"
    renamed = "def f(xs):\n    k = 0\n    for x in xs:\n        k += 1\n    return len(xs) - k"
    assert program_key(counted) == program_key(renamed)
    assert program_key("def f(a):\n    return a + 1") != program_key("def f(a):\n    return a + 2")
    assert program_key("def f(a):\n    return len(a)") != program_key("def f(a):\n    return sum(a)")


def test_the_asserted_output_span_is_what_follows_the_call() -> None:
    from azr.parsing import asserted_output_span

    def guessed(line: str) -> str | None:
        span = asserted_output_span(line)
        return None if span is None else line[span[0] : span[1]]

    assert guessed("assert f(3) == 7") == " == 7"
    assert guessed("    assert f('é', [1, 2]) == 'ü' ") == " == 'ü' "  # indented, non-ASCII
    assert guessed("assert f(x == 1) == [0]") == " == [0]"  # a comparison inside the arguments
    assert guessed("assert g(3) == 7") is None
    assert guessed("assert f(3)") is None
    assert guessed("print(f(3))") is None
    assert guessed("assert f(3) == (") is None  # does not parse


def test_number_literal_reads_numbers_only() -> None:
    assert number_literal(" 70") == 70 and number_literal("-2.5") == -2.5
    assert number_literal("True") is None and number_literal("'7'") is None
    assert number_literal("[1]") is None and number_literal("1 +") is None
