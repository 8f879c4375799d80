"""Prompt formats: versioned template files plus the rules for reading answers back.

A format is a directory `templates/<name>/<version>/` holding one `.txt` template per piece
(`deduction_propose.txt`, `io_reference.txt`, …) and a `format.json` that gives, per prompt template, the
stop strings for generation and the `prefix`: text the prompt ends with that belongs to the answer (the
completion format ends proposer prompts with `def f(` so a small model starts writing a function at once;
the parser puts it back). Templates use `string.Template` placeholders (`$program`), so the braces of Python
code need no escaping; one trailing newline of each file is dropped, which matters for prompts that must end
exactly on `==`.

Two families exist. `r1` is the paper's: reasoning in `<think>`, the answer in `<answer>` with fenced
blocks. `completion` is few-shot code completion for small or base models (CRUXEval style): examples are
code followed by `assert f(<input>) == <output>`, and the model simply continues the pattern.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from functools import cache
from importlib import resources
from string import Template
from typing import ClassVar

from azr.parsing import (
    BadFormat,
    assert_call,
    asserted_output_span,
    calls_of_f,
    check_arguments,
    check_program,
    check_value,
    clip,
    fenced_block,
    fenced_blocks,
    think_answer,
)

TEMPLATE_ROOT = "templates"


class PromptFormat(ABC):
    """A prompt family at one version: renders templates, knows stop strings and extracts answers."""

    name: ClassVar[str]

    def __init__(self, version: str = "v1") -> None:
        self.version = version
        directory = resources.files("azr.prompts").joinpath(TEMPLATE_ROOT, self.name, version)
        if not directory.is_dir():
            raise ValueError(f"prompt format {self.name!r} has no version {version!r}")
        self._directory = directory
        self._settings: dict[str, dict] = json.loads(directory.joinpath("format.json").read_text("utf-8"))
        self._templates: dict[str, Template] = {}
        # Listed once: optional templates are looked up for every prompt.
        self._template_names = frozenset(
            entry.name[:-4] for entry in directory.iterdir() if entry.name.endswith(".txt")
        )

    def template_names(self) -> list[str]:
        """Every template of this format version, by file stem."""
        return sorted(self._template_names)

    def has_template(self, template: str) -> bool:
        return template in self._template_names

    def render(self, template: str, **fields: str) -> str:
        """Fill template `template` (file stem) with `fields`; a missing field is a KeyError naming it."""
        if template not in self._templates:
            path = self._directory.joinpath(f"{template}.txt")
            if not path.is_file():
                raise ValueError(f"format {self.name}/{self.version} has no template {template!r}")
            text = path.read_text("utf-8")
            self._templates[template] = Template(text.removesuffix("\n"))
        # Solver prompts with no worked examples would otherwise open on blank lines.
        return self._templates[template].substitute(fields).lstrip("\n")

    def stop(self, template: str) -> list[str]:
        """Stop strings for generating the response to prompt `template`."""
        return list(self._settings.get(template, {}).get("stop", []))

    def prefix(self, template: str) -> str:
        """Text the prompt ends with that is the start of the answer (put back before parsing)."""
        return self._settings.get(template, {}).get("prefix", "")

    @abstractmethod
    def program_and_input(self, template: str, response: str) -> tuple[str, str] | BadFormat:
        """(program, input) from a proposer response."""

    @abstractmethod
    def inputs_and_message(self, template: str, response: str) -> tuple[list[str], str] | BadFormat:
        """(inputs, message) from an induction proposer response; inputs are argument lists."""

    @abstractmethod
    def value(self, template: str, response: str) -> str | BadFormat:
        """A Python value expression (e.g. a predicted output) from a solver response."""

    @abstractmethod
    def arguments(self, template: str, response: str) -> str | BadFormat:
        """An argument list (e.g. a predicted input) from a solver response."""

    @abstractmethod
    def program(self, template: str, response: str) -> str | BadFormat:
        """A program from a solver response."""

    def unchecked_spans(self, template: str, response: str) -> list[tuple[int, int]]:
        """(start, end) character spans of a response that nothing reads or checks, such as the outputs a
        proposer writes after its calls (the sandbox computes the real ones). None here."""
        return []


def _checked_inputs(candidates: list[str]) -> list[str]:
    """The candidates that are valid argument lists, in order."""
    return [arguments for arguments in candidates if not isinstance(check_arguments(arguments), BadFormat)]


class R1Format(PromptFormat):
    """The paper's format: `<think>…</think><answer>…</answer>`, pieces in fenced blocks inside the answer."""

    name = "r1"

    def _answer(self, template: str, response: str) -> str | BadFormat:
        return think_answer(self.prefix(template) + clip(response))

    def program_and_input(self, template: str, response: str) -> tuple[str, str] | BadFormat:
        answer = self._answer(template, response)
        if isinstance(answer, BadFormat):
            return answer
        program, inputs = fenced_block(answer, ("python", "py")), fenced_block(answer, ("input",))
        if program is None or inputs is None:
            return BadFormat("answer lacks a ```python or ```input block")
        program, inputs = check_program(program), check_arguments(inputs)
        if isinstance(program, BadFormat):
            return program
        if isinstance(inputs, BadFormat):
            return inputs
        return program, inputs

    def inputs_and_message(self, template: str, response: str) -> tuple[list[str], str] | BadFormat:
        answer = self._answer(template, response)
        if isinstance(answer, BadFormat):
            return answer
        blocks = fenced_blocks(answer)
        message = fenced_block(answer, ("message",))
        if message is None or not message.strip():
            return BadFormat("answer lacks a ```message block")
        inputs = _checked_inputs([body.strip() for language, body in blocks if language == "input"])
        if not inputs:
            return BadFormat("answer has no valid ```input block")
        return inputs, message.strip()

    def _block_or_text(self, template: str, response: str, languages: tuple[str, ...]) -> str | BadFormat:
        """The answer's fenced block in one of `languages`, or the whole answer when it has no fences."""
        answer = self._answer(template, response)
        if isinstance(answer, BadFormat):
            return answer
        block = fenced_block(answer, languages)
        if block is not None:
            return block
        if "```" in answer:
            return BadFormat(f"answer has no closed ```{languages[0]} block")
        return answer

    def value(self, template: str, response: str) -> str | BadFormat:
        text = self._block_or_text(template, response, ("output", "python", ""))
        return text if isinstance(text, BadFormat) else check_value(text)

    def arguments(self, template: str, response: str) -> str | BadFormat:
        text = self._block_or_text(template, response, ("input", "python", ""))
        return text if isinstance(text, BadFormat) else check_arguments(text)

    def program(self, template: str, response: str) -> str | BadFormat:
        text = self._block_or_text(template, response, ("python", "py", ""))
        return text if isinstance(text, BadFormat) else check_program(text)


# Top-level lines that may hold the call naming a proposal's input: not indented (the function body),
# not a comment, decorator, import or another definition.
_CALLER_STARTS = tuple("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_DEFINITIONS = ("def ", "class ", "import ", "from ", "async ")


class CompletionFormat(PromptFormat):
    """Few-shot code completion: the model continues a file of functions and `assert f(...) == ...` lines.

    Parsing reads the prompt's prefix plus the response: a program is every line up to the first top-level
    `assert f(`, an input is the argument list of such an assert, an answer is the rest of the line.
    """

    name = "completion"

    def _text(self, template: str, response: str) -> str:
        return (self.prefix(template) + clip(response)).replace("\r\n", "\n")

    def program_and_input(self, template: str, response: str) -> tuple[str, str] | BadFormat:
        """The program is every line before the first top-level line that calls `f`; the input is that
        call's argument list. Small models often write `print(f(x))` or `y = f(x)` instead of the assert;
        the executor computes the output, so any call names the input."""
        lines = self._text(template, response).split("\n")
        for index, line in enumerate(lines):
            if index == 0 or not line.startswith(_CALLER_STARTS) or line.startswith(_DEFINITIONS):
                continue
            if "f(" not in line:
                continue
            program = check_program("\n".join(lines[:index]))
            if isinstance(program, BadFormat):
                return program
            found = assert_call(line)
            calls = [found[0]] if found else calls_of_f(line)
            arguments = calls[0] if calls else _leading_call(line)
            if arguments is None:
                return BadFormat("the line calling f has no readable call")
            return program, arguments
        return BadFormat("no line calling `f(...)` after the program")

    def inputs_and_message(self, template: str, response: str) -> tuple[list[str], str] | BadFormat:
        return inputs_and_message_of(self._text(template, response))

    def unchecked_spans(self, template: str, response: str) -> list[tuple[int, int]]:
        """In a proposer response, the ` == EXPECTED` of every `assert f(ARGS) == EXPECTED` line: the
        proposer's guess of an output, which the sandbox replaces by the real one. The solver of a deduction
        task writes exactly there, so training the proposer on its (mostly wrong) guesses teaches wrong
        answers."""
        if not template.endswith("_propose"):
            return []
        spans, start = [], 0
        for line in response.split("\n"):
            span = asserted_output_span(line)
            if span is not None:
                spans.append((start + span[0], start + span[1]))
            start += len(line) + 1
        return spans

    def value(self, template: str, response: str) -> str | BadFormat:
        line = self._text(template, response).split("\n", 1)[0]
        return check_value(line)

    def arguments(self, template: str, response: str) -> str | BadFormat:
        line = self._text(template, response).split("\n", 1)[0].strip()
        found = assert_call(line)
        if found is None:
            return BadFormat("not a call `f(...)`")
        return found[0]

    def program(self, template: str, response: str) -> str | BadFormat:
        lines = self._text(template, response).split("\n")
        # The program ends where the next example starts: an assert or comment at column 0.
        end = next(
            (index for index, line in enumerate(lines) if index and line.startswith(("assert", "#"))),
            len(lines),
        )
        return check_program("\n".join(lines[:end]))


def inputs_and_message_of(text: str) -> tuple[list[str], str] | BadFormat:
    """Induction proposal in completion style: the first `# ...` line is the message, every `f(...)` call
    on the other lines gives an input (the rest of such a line is ignored: the executor computes outputs)."""
    message = ""
    candidates: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("#") and not message:
            message = stripped.lstrip("#").strip()
        elif "f(" in stripped:
            calls = calls_of_f(stripped)
            if not calls and (garbled := _leading_call(stripped)) is not None:
                calls = [garbled]
            candidates.extend(calls)
    if not message:
        return BadFormat("no `# message` line")
    inputs = _checked_inputs(candidates)
    if not inputs:
        return BadFormat("no readable `assert f(...)` line")
    return inputs, message


MAX_CUTS = 4
"""Cut points tried by `_leading_call`; bounds its cost on lines full of ` == `."""


def _leading_call(line: str) -> str | None:
    """The argument list of `assert f(ARGS) == <anything>` when the expected part does not parse.

    Proposers are only asked for inputs (the executor computes outputs), so a garbled expected value
    should not throw a good input away. The call is cut at the first ` == ` that leaves a valid call.
    """
    body = line.strip().removeprefix("assert ").strip()
    start = 0
    for _ in range(MAX_CUTS):
        cut = body.find(" == ", start)
        if cut < 0:
            return None
        found = assert_call(body[:cut])
        if found is not None:
            return found[0]
        start = cut + 1
    return None


FORMATS: dict[str, type[PromptFormat]] = {R1Format.name: R1Format, CompletionFormat.name: CompletionFormat}


def versions(name: str) -> list[str]:
    """The template versions of format `name`, oldest first (`v1`, `v2`, ...)."""
    if name not in FORMATS:
        raise ValueError(f"unknown prompt format {name!r}; known: {', '.join(sorted(FORMATS))}")
    folder = resources.files("azr.prompts").joinpath(TEMPLATE_ROOT, name)
    found = [entry.name for entry in folder.iterdir() if entry.is_dir() and entry.name.startswith("v")]
    return sorted(found, key=lambda version: int(version[1:]))


def latest_version(name: str) -> str:
    """The newest template version of format `name`: what a new run uses unless told otherwise."""
    return versions(name)[-1]


@cache
def get_format(name: str, version: str | None = None) -> PromptFormat:
    """The prompt format `name` at `version`, the newest when None (cached: templates are read once)."""
    if name not in FORMATS:
        raise ValueError(f"unknown prompt format {name!r}; known: {', '.join(sorted(FORMATS))}")
    return FORMATS[name](version or latest_version(name))
