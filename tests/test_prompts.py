"""Every template of every format renders, prompts end where the format says, and formats are versioned."""

from __future__ import annotations

import pytest

from azr.prompts import FORMATS, PromptFormat, get_format
from azr.tasks import ROLES, TASK_TYPES, Task, get_task_type

IO_TASK = Task("def f(s, n):\n    return s * n", "'ab', 2", "'abab'")
MULTILINE = Task("def f(xs):\n    return sum(xs)", "[1,\n 2]", "3")
INDUCTION_TASK = Task(
    "def f(x):\n    return x + 1",
    inputs=tuple(str(i) for i in range(10)),
    outputs=tuple(str(i + 1) for i in range(10)),
    message="Adds one\nto its input.",
)


def rendered(fmt: PromptFormat) -> dict[str, str]:
    """Every prompt of every task type and role in `fmt`, keyed by template name."""
    prompts = {}
    for name in TASK_TYPES:
        task_type = get_task_type(name)
        own = INDUCTION_TASK if name == "induction" else IO_TASK
        references = [IO_TASK, INDUCTION_TASK] if name == "induction" else [IO_TASK, MULTILINE]
        prompts[f"{name}_propose"] = task_type.proposer_prompt(fmt, references).text
        prompts[f"{name}_solve"] = task_type.solver_prompt(fmt, own, examples=[own])
    return prompts


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_every_template_renders_and_is_used(format_name: str) -> None:
    fmt = get_format(format_name)
    prompts = rendered(fmt)
    for text in prompts.values():
        assert "$" not in text and text.strip()
    # Piece templates (examples, pairs, references) are all reached through the prompts above.
    pieces = {"io_reference", "pair", "induction_propose_example", "induction_solve_example"}
    pieces |= {f"{name}_example" for name in ("deduction", "abduction")}
    if format_name == "completion":  # since v3 the induction proposer's pairs sit in a test function
        pieces.add("induction_propose_pair")
    assert set(fmt.template_names()) == set(prompts) | pieces
    assert "'abab'" in prompts["deduction_propose"] and "Adds one to its input." in prompts["induction_solve"]


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_prompts_end_with_their_prefix_and_have_stop_strings(format_name: str) -> None:
    fmt = get_format(format_name)
    for template, text in rendered(fmt).items():
        assert text.endswith(fmt.prefix(template))
    for name in TASK_TYPES:
        for role in ROLES:
            assert get_task_type(name).stop(fmt, role)


def test_completion_prompts_follow_the_cruxeval_pattern() -> None:
    prompts = rendered(get_format("completion"))
    # No trailing space after `==`: measured to matter for SmolLM2 (README, "Prompt formats").
    assert prompts["deduction_solve"].endswith("\nassert f('ab', 2) ==")
    assert prompts["abduction_solve"].endswith("\nassert 'abab' == f(")
    assert prompts["induction_solve"].endswith("assert f(4) == 5\ndef f(")
    assert "assert f(5)" not in prompts["induction_solve"].split("# Adds one")[-1]
    # A multi-line input is shown on one line, so the assert pattern holds.
    assert "assert f([1, 2]) == 3" in prompts["deduction_propose"]


def test_completion_induction_proposal_is_a_test_function_that_starts_with_the_message() -> None:
    """Completion v3: the proposer writes the message first (the prompt ends inside `def test_f():` on
    `# `), then asserts; measured on Qwen2.5-Coder-0.5B to parse far more often than message-last layouts
    (benchmarks/RESULTS.md)."""
    fmt = get_format("completion", "v3")
    induction = get_task_type("induction")
    prompt = induction.proposer_prompt(fmt, [IO_TASK, INDUCTION_TASK])
    assert prompt.text.endswith("def f(s, n):\n    return s * n\n\ndef test_f():\n    # ")
    assert (
        "def test_f():\n    # Adds one to its input.\n    assert f(0) == 1\n    assert f(1) == 2\n"
        in prompt.text
    )
    response = "Repeats a string.\n    assert f('x', 3) == 'xxx'\n    assert f('', 2) == ''\n    f('ab', 0)"
    proposal = induction.parse_proposal(fmt, prompt, response)
    assert proposal.message == "Repeats a string."
    assert proposal.inputs == ("'x', 3", "'', 2", "'ab', 0")
    # The solver's pairs stay unindented asserts after the message.
    assert get_format("completion", "v2").render("pair", input="1", output="2") == "assert f(1) == 2"
    assert "\n    assert" not in induction.solver_prompt(fmt, INDUCTION_TASK)


def test_r1_prompts_ask_for_think_and_answer() -> None:
    for text in rendered(get_format("r1")).values():
        assert "<think>" in text and "<answer>" in text and text.endswith("Assistant: <think>")


def test_unknown_formats_versions_and_fields_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown prompt format"):
        get_format("chatml")
    with pytest.raises(ValueError, match="no version"):
        get_format("r1", "v999")
    with pytest.raises(ValueError, match="no template"):
        get_format("r1").render("missing_template")
    with pytest.raises(KeyError, match="program"):
        get_format("completion").render("deduction_solve", examples="", input="1")


def test_only_proposer_outputs_are_unchecked_spans() -> None:
    completion = get_format("completion", "v3")
    response = "x):\n    return x + 1\nassert f(3) == 7\nassert f(4) == 5"
    spans = completion.unchecked_spans("deduction_propose", response)
    assert [response[start:end] for start, end in spans] == [" == 7", " == 5"]
    induction = "Adds one.\n    assert f(1) == 2\n    assert f(2) == 3"
    spans = completion.unchecked_spans("induction_propose", induction)
    assert [induction[start:end] for start, end in spans] == [" == 2", " == 3"]
    assert completion.unchecked_spans("deduction_solve", " 7") == []
    assert get_format("r1").unchecked_spans("deduction_propose", response) == []
