"""Prompts for each benchmark kind in two styles, and extraction of the answer from a response.

- `chat` (instruct models): the task goes into the tokenizer's chat template as one user message; the model
  is asked for a fenced ```python block (code, CRUXEval) or a `\\boxed{}` answer (math); generation ends
  at EOS.
- `completion` (base models): a plain text prefix the model continues. CRUXEval prompts show one solved
  example, then end with `assert f(INPUT) ==` (output) or `assert OUTPUT == f(` (input), with no trailing
  space, and generation stops at the end of the line; code prompts end where the code starts (a HumanEval
  stub is continued in place) and stop at the next top-level statement; math prompts end with `Solution:`.

The held-out probe of self-play tasks (kind `selfplay`) is asked in both styles with the self-play solver
prompt, a plain completion prefix, and read back with the task type's own parser (`azr.probe`): it
measures the model on the prompts it trains with.

Both styles ask for the same thing with the same information, so a base and an instruct model are compared
fairly; `auto` picks `chat` when the tokenizer has a chat template. Extraction never evaluates model text.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Literal

from azr import probe
from azr.evaluation.benchmarks import Problem, ProblemKind
from azr.evaluation.math_grading import extract_math_answer

PromptStyle = Literal["chat", "completion"]
PROMPT_STYLES = ("auto", "chat", "completion")

DEFAULT_MAX_NEW_TOKENS: dict[ProblemKind, dict[PromptStyle, int]] = {
    "output": {"chat": 256, "completion": 64},
    "input": {"chat": 256, "completion": 64},
    "code": {"chat": 768, "completion": 512},
    "stdio": {"chat": 1024, "completion": 1024},
    "math": {"chat": 1024, "completion": 1024},
    # The `cpu-coder` preset's solver budget (`generation.solve_max_new_tokens`).
    "selfplay": {"chat": 96, "completion": 96},
}
"""Token budget per kind and style; reasoning-heavy models need `--max-new-tokens` raised."""

MAX_ANSWER_LINE_CHARS = 4_000
"""A CRUXEval answer line longer than this is not parsed (it would only be a runaway generation)."""

_CRUX_OUTPUT_EXAMPLE = "def f(text):\n    return text.upper() + '!'\nassert f('hi') == 'HI!'\n"
_CRUX_INPUT_EXAMPLE = "def f(text):\n    return text.upper() + '!'\nassert 'HI!' == f('hi')\n"
_HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert")
_MBPP_STOPS = ("\nassert", '\n"""', "\nif __name__", "\nprint(", "\n```", "\n# Test")


@dataclass(frozen=True)
class Prompt:
    """What the model is given for one problem: the text (before any chat template) and its stop strings."""

    text: str
    stop: tuple[str, ...]
    chat: bool


def resolve_style(style: str, has_chat_template: bool) -> PromptStyle:
    """`auto` becomes `chat` for tokenizers with a chat template and `completion` otherwise."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"Unknown prompt style {style!r}: use one of {', '.join(PROMPT_STYLES)}.")
    if style == "auto":
        return "chat" if has_chat_template else "completion"
    if style == "chat" and not has_chat_template:
        raise ValueError("--prompt-style chat needs a tokenizer with a chat template; use completion.")
    return style  # type: ignore[return-value]


def _is_stub(problem: Problem) -> bool:
    """HumanEval-style prompts are a function stub to continue; MBPP-style ones describe the task."""
    return bool(problem.entry_point) and f"def {problem.entry_point}(" in problem.question


def build_prompt(problem: Problem, style: PromptStyle) -> Prompt:
    """The prompt for `problem` in `style` (chat prompts still need the chat template applied)."""
    builders = {
        "output": _output_prompt,
        "input": _input_prompt,
        "code": _code_prompt,
        "stdio": _stdio_prompt,
        "selfplay": _selfplay_prompt,
    }
    return builders.get(problem.kind, _math_prompt)(problem, style == "chat")


def _output_prompt(problem: Problem, chat: bool) -> Prompt:
    call = f"f({problem.gold_input})"
    if chat:
        return Prompt(
            "Here is a Python function and an assertion whose right-hand side is missing:\n\n"
            f"```python\n{problem.question}\nassert {call} == ??\n```\n\n"
            "Work out what the call returns. Then write the completed assertion on one line, "
            f"`assert {call} == <output>` with the output as a Python literal, in a ```python block.",
            (),
            True,
        )
    return Prompt(
        "Complete each assertion with the literal value the function call returns.\n\n"
        f"{_CRUX_OUTPUT_EXAMPLE}\n{problem.question}\nassert {call} ==",
        ("\n",),
        False,
    )


def _input_prompt(problem: Problem, chat: bool) -> Prompt:
    if chat:
        return Prompt(
            "Here is a Python function and an assertion whose input is missing:\n\n"
            f"```python\n{problem.question}\nassert f(??) == {problem.gold_output}\n```\n\n"
            "Find any input that makes the assertion hold. Then write the completed assertion on one "
            "line, "
            f"`assert f(<input>) == {problem.gold_output}`, in a ```python block.",
            (),
            True,
        )
    return Prompt(
        "Complete each assertion with arguments for which the function returns the given value.\n\n"
        f"{_CRUX_INPUT_EXAMPLE}\n{problem.question}\nassert {problem.gold_output} == f(",
        ("\n",),
        False,
    )


def _selfplay_prompt(problem: Problem, chat: bool) -> Prompt:
    """The self-play solver prompt, whatever the style: the probe measures the prompts self-play trains on."""
    text = probe.solver_prompt(problem.task_type, problem.task, problem.examples)
    return Prompt(text, probe.solver_stop(problem.task_type), False)


def _code_prompt(problem: Problem, chat: bool) -> Prompt:
    if chat:
        task = (
            f"Complete the following Python function:\n\n```python\n{problem.question}```"
            if _is_stub(problem)
            else problem.question.strip()
        )
        return Prompt(
            f"{task}\n\nReply with the complete function, and any imports it needs, in one ```python block.",
            (),
            True,
        )
    if _is_stub(problem):
        return Prompt(problem.question, _HUMANEVAL_STOPS, False)
    return Prompt(f"{problem.question.rstrip()}\n", _MBPP_STOPS, False)


def _stdio_prompt(problem: Problem, chat: bool) -> Prompt:
    if chat:
        return Prompt(
            f"{problem.question.strip()}\n\nWrite a Python program that reads the input from standard "
            "input and prints the answer to standard output. Reply with the program in one "
            "```python block.",
            (),
            True,
        )
    return Prompt(
        f"{problem.question.strip()}\n\nPython program that reads standard input and prints the answer:\n"
        "```python\n",
        ("```",),
        False,
    )


def _math_prompt(problem: Problem, chat: bool) -> Prompt:
    if chat:
        return Prompt(
            f"{problem.question.strip()}\n\nSolve the problem step by step, then write the final answer as "
            "\\boxed{answer}.",
            (),
            True,
        )
    return Prompt(
        f"Problem:\n{problem.question.strip()}\n\nSolve the problem step by step and put the final answer in "
        "\\boxed{}.\n\nSolution:",
        ("\nProblem:",),
        False,
    )


def _fenced_code(response: str) -> str | None:
    """The body of the last closed ``` block tagged python, py or untagged; None when there is none."""
    parts = response.split("```")
    bodies = []
    for index in range(1, len(parts) - 1, 2):  # odd parts lie between an opening and a closing fence
        header, _, body = parts[index].partition("\n")
        if header.strip().lower() in ("python", "py", "python3", ""):
            bodies.append(body)
    return bodies[-1] if bodies else None


def _assert_parts(line: str) -> tuple[str, str] | None:
    """(arguments, expected) of a line `assert f(ARGS) == EXPECTED`, as source text; None otherwise."""
    line = line.strip()
    if not line.startswith("assert") or len(line) > MAX_ANSWER_LINE_CHARS:
        return None
    try:
        tree = ast.parse(line)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    statement = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(statement, ast.Assert) or not isinstance(statement.test, ast.Compare):
        return None
    test = statement.test
    call = test.left
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        return None
    arguments = ", ".join(ast.get_source_segment(line, node) or "" for node in [*call.args, *call.keywords])
    expected = ast.get_source_segment(line, test.comparators[0]) or ""
    return arguments, expected


def _arguments_until_close(line: str) -> str | None:
    """The arguments of `f(` continued by `line`: the shortest prefix closing the call, without its `)`."""
    line = line[:MAX_ANSWER_LINE_CHARS]
    for index, character in enumerate(line):
        if character != ")":
            continue
        try:
            tree = ast.parse(f"f({line[: index + 1]}", mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if isinstance(tree.body, ast.Call):
            return line[:index].strip()  # may be empty: a CRUXEval `f` can take no argument
    return None


def _chat_assertion(response: str, want: Literal["arguments", "expected"]) -> str | None:
    """The requested side of the last `assert f(...) == ...` line of a chat response."""
    for line in reversed(response.splitlines()):
        parts = _assert_parts(line)
        if parts is not None:
            arguments, expected = parts
            return arguments if want == "arguments" else expected or None
    return None


def _imports_of(source: str) -> str:
    """The top-level import lines of a prompt stub (e.g. `from typing import List`)."""
    lines = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    return "\n".join(lines) + "\n" if lines else ""


def _program(problem: Problem, response: str, style: PromptStyle) -> str | None:
    fenced = _fenced_code(response)
    stub = problem.kind == "code" and _is_stub(problem)
    if style == "completion" and stub and (fenced is None or f"def {problem.entry_point}(" not in fenced):
        return problem.question + response  # the continuation of the stub, as prompted
    code = response if fenced is None else fenced
    if not code.strip():
        return None
    if stub:
        if f"def {problem.entry_point}(" not in code:
            # The model wrote only the body (as HumanEval's canonical solutions are): put it under the stub.
            return problem.question + code
        return _imports_of(problem.question) + code
    return code


def extract_answer(problem: Problem, response: str, style: PromptStyle) -> str | None:
    """The gradable answer in `response`: a value, an argument list, a program or a math answer (or None)."""
    if problem.kind in ("output", "input"):
        want: Literal["arguments", "expected"] = "expected" if problem.kind == "output" else "arguments"
        if style == "chat":
            return _chat_assertion(response, want)
        first_line = response.split("\n", 1)[0]
        if problem.kind == "input":
            return _arguments_until_close(first_line)
        return first_line.strip()[:MAX_ANSWER_LINE_CHARS] or None
    if problem.kind == "math":
        return extract_math_answer(response)
    if problem.kind == "selfplay":
        return probe.parse_answer(problem.task_type, response)
    return _program(problem, response, style)
