"""Turning arbitrary model output into parsed pieces, or a clean `BadFormat`.

Every function here accepts any string a model may emit (empty, huge, unclosed fences, NUL bytes, other
languages, nested tags) and returns either the parsed value or a `BadFormat` carrying a short reason. None of
them raises on bad input. Cost is bounded: responses are clipped to `MAX_RESPONSE_CHARS` before any work, and
only linear scans (`str.find`, `str.split`) and Python's own parser are used, never backtracking regexes.

Nothing here evaluates model text. Syntax is checked with `ast.parse`, which only parses; values are
computed later, inside the executor's sandbox.
"""

from __future__ import annotations

import ast
import functools
import warnings
from dataclasses import dataclass

MAX_RESPONSE_CHARS = 32_000
"""Longest response prefix that is parsed; the rest is ignored (generation limits make it rare)."""
MAX_PROGRAM_CHARS = 8_000
"""Longest accepted program. Longer ones are a format error: they blow up prompts and buffers."""
MAX_EXPRESSION_CHARS = 2_000
"""Longest accepted input or output expression."""

FENCE = "```"


@dataclass(frozen=True)
class BadFormat:
    """A response that could not be parsed; `reason` says why, for logs and tests."""

    reason: str


def clip(text: str) -> str:
    """The part of a response that is parsed. Non-strings (a backend bug) become the empty string."""
    return text[:MAX_RESPONSE_CHARS] if isinstance(text, str) else ""


def _parses(source: str, mode: str) -> ast.AST | None:
    """`ast.parse` that reports failure as None instead of raising (deep nesting raises several types)."""
    try:
        with warnings.catch_warnings():
            # Model code with an invalid escape such as '\d' is still valid Python; the warning is noise.
            warnings.simplefilter("ignore")
            return ast.parse(source, mode=mode)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def check_program(source: str) -> str | BadFormat:
    """A program's stripped source if it is syntactically valid Python of bounded size."""
    program = source.strip("\n\r ")
    if not program:
        return BadFormat("empty program")
    if len(program) > MAX_PROGRAM_CHARS:
        return BadFormat("program too long")
    if "\x00" in program:
        return BadFormat("NUL byte in program")
    if not isinstance(_parses(program, "exec"), ast.Module):
        return BadFormat("program is not valid Python")
    return program


def check_value(text: str) -> str | BadFormat:
    """A stripped single Python expression, e.g. a predicted output `[1, 'a']`."""
    value = text.strip()
    if not value:
        return BadFormat("empty value")
    if len(value) > MAX_EXPRESSION_CHARS:
        return BadFormat("value too long")
    if "\x00" in value:
        return BadFormat("NUL byte in value")
    if _parses(value, "eval") is None:
        return BadFormat("value is not a Python expression")
    return value


def _call_of(text: str) -> ast.Call | None:
    """The `f(...)` call that `text` is, if it is exactly one such call."""
    tree = _parses(text, "eval")
    if not isinstance(tree, ast.Expression):
        return None
    call = tree.body
    if not _calls_f(call):
        return None
    return call


def check_arguments(text: str) -> str | BadFormat:
    """A stripped argument list such as `'a', 3` or `x=[1]`.

    It must make `f(<text>)` one single call: that rejects both syntax errors and smuggled extras such as
    `1), g(2`, which would otherwise parse as a tuple of two calls.
    """
    arguments = text.strip()
    if not arguments:
        return BadFormat("empty arguments")
    if len(arguments) > MAX_EXPRESSION_CHARS:
        return BadFormat("arguments too long")
    if "\x00" in arguments:
        return BadFormat("NUL byte in arguments")
    call = _call_of(f"f({arguments})")
    if call is None or not (call.args or call.keywords):
        return BadFormat("not an argument list")
    return arguments


def normalize_program(program: str) -> str:
    """A canonical form for deduplication: same AST, same text (comments and layout do not count).
    Text too long to be an accepted program is only stripped, keeping the cost bounded."""
    tree = _parses(program, "exec") if len(program) <= MAX_PROGRAM_CHARS else None
    if tree is None:
        return program.strip()
    try:
        return ast.unparse(tree)
    except (ValueError, RecursionError):
        return program.strip()


class _NumberedNames(ast.NodeTransformer):
    """Renames the names a program binds (parameters, assigned and loop variables) to `v0`, `v1`, … in
    the order they first appear; names it only reads (builtins, imports' attributes) stay."""

    def __init__(self, bound: set[str]) -> None:
        self.bound = bound
        self.numbers: dict[str, str] = {}

    def _number(self, name: str) -> str:
        if name not in self.bound:
            return name
        return self.numbers.setdefault(name, f"v{len(self.numbers)}")

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self._number(node.arg)
        return node

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._number(node.id)
        return node


@functools.lru_cache(maxsize=65536)
def program_key(program: str) -> str:
    """What two programs are compared by: the normalised program (layout and comments do not count) with
    its own names numbered, so that a copy with renamed parameters or variables is the same program
    (`def f(abc): return abc` is the identity seed)."""
    try:
        tree = ast.parse(program) if len(program) <= MAX_PROGRAM_CHARS else None
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is None:
        return normalize_program(program)
    bound = {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    bound |= {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)
    }
    try:
        return ast.unparse(_NumberedNames(bound).visit(tree))
    except (ValueError, RecursionError):
        return normalize_program(program)


def number_literal(text: str) -> int | float | None:
    """The number a Python literal spells (`70`, ` -2.5`), or None for anything else, booleans included."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def normalize_arguments(arguments: str) -> str:
    """A canonical form of an argument list, e.g. `"a" ,1` and `'a', 1` become the same."""
    call = _call_of(f"f({arguments})") if len(arguments) <= MAX_EXPRESSION_CHARS else None
    if call is None:
        return arguments.strip()
    try:
        return ast.unparse(call)[2:-1]
    except (ValueError, RecursionError):
        return arguments.strip()


def one_line(expression: str) -> str:
    """An expression on a single line (the canonical form if it spans several), so it fits one
    `assert f(...) == ...` line; string newlines stay escaped, so the meaning is unchanged."""
    if "\n" not in expression:
        return expression
    call = _call_of(f"f({expression})") if len(expression) <= MAX_EXPRESSION_CHARS else None
    if call is None:
        return " ".join(expression.split())
    try:
        return ast.unparse(call)[2:-1]
    except (ValueError, RecursionError):
        return " ".join(expression.split())


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """All closed ``` fenced blocks as (language tag, body) pairs, in order; an unclosed fence is dropped."""
    parts = clip(text).split(FENCE)
    blocks = []
    # Odd parts sit between an opening and a closing fence; a trailing odd part has no closing fence.
    for index in range(1, len(parts) - 1, 2):
        header, _, body = parts[index].partition("\n")
        blocks.append((header.strip().lower(), body))
    return blocks


def fenced_block(text: str, languages: tuple[str, ...]) -> str | None:
    """The body of the last closed block tagged with one of `languages`; the last one wins, as models
    that revise themselves put the final version last."""
    matches = [body for language, body in fenced_blocks(text) if language in languages]
    return matches[-1] if matches else None


def between(text: str, opening: str, closing: str, start: int = 0) -> tuple[str, int] | None:
    """The text between the first `opening` at or after `start` and the next `closing`, and the index just
    after `closing`. A missing `closing` closes at the end of the text: generation backends stop on the
    closing tag and may leave it out of the response."""
    begin = text.find(opening, start)
    if begin < 0:
        return None
    begin += len(opening)
    end = text.find(closing, begin)
    if end < 0:
        return text[begin:], len(text)
    return text[begin:end], end + len(closing)


def think_answer(text: str) -> str | BadFormat:
    """The content of `<answer>` in a `<think>…</think> <answer>…</answer>` response (the r1 format).

    Only whitespace may separate `</think>` from `<answer>`; anything else is a format error, as in the
    paper's format reward.
    """
    text = clip(text)
    opening = text.find("<think>")
    closing = text.find("</think>", opening + 1) if opening >= 0 else -1
    if opening < 0 or closing < 0:
        return BadFormat("no <think>…</think>")
    rest = text[closing + len("</think>") :].lstrip()
    if not rest.startswith("<answer>"):
        return BadFormat("no <answer> right after </think>")
    found = between(rest, "<answer>", "</answer>")
    assert found is not None  # rest starts with <answer>
    answer = found[0]
    if "<answer>" in answer:
        return BadFormat("nested <answer>")
    return answer


def _asserted_equality(line: str) -> tuple[ast.expr, ast.expr] | None:
    """(LEFT, RIGHT) of a line `assert LEFT == RIGHT` (stripped), else None."""
    tree = _parses(line, "exec")
    if not (isinstance(tree, ast.Module) and len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert)):
        return None
    test = tree.body[0].test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    return test.left, test.comparators[0]


def _calls_f(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "f"


def assert_call(line: str) -> tuple[str, str | None] | None:
    """(arguments, expected) of a line `assert f(ARGS) == EXPECTED`, or of a bare call `f(ARGS)`.

    Expected is None for a bare call. Arguments are returned in canonical form (`ast.unparse`), which
    keeps their meaning. Anything else gives None.
    """
    line = line.strip()
    if len(line) > 2 * MAX_EXPRESSION_CHARS or "\x00" in line:
        return None
    if line.startswith("assert "):
        parts = _asserted_equality(line)
        if parts is None:
            return None
        call, expected = parts
    else:
        tree = _parses(line, "eval")
        if not isinstance(tree, ast.Expression):
            return None
        call, expected = tree.body, None
    if not _calls_f(call):
        return None
    if not (call.args or call.keywords):
        return None
    try:
        arguments = ast.unparse(call)[2:-1]
        return arguments, None if expected is None else ast.unparse(expected)
    except (ValueError, RecursionError):
        return None


def asserted_output_span(line: str) -> tuple[int, int] | None:
    """Where, in one line `assert f(ARGS) == EXPECTED` (any indentation), the comparison with EXPECTED
    starts and the line ends: the part after the call. None for any other line."""
    stripped = line.lstrip()
    if not stripped.startswith("assert ") or "\x00" in line:
        return None
    parts = _asserted_equality(stripped.rstrip())
    if parts is None or not _calls_f(parts[0]):
        return None
    call = parts[0]
    # ast offsets count UTF-8 bytes of the (single) line.
    call_end = len(stripped.encode("utf-8")[: call.end_col_offset].decode("utf-8", errors="ignore"))
    return len(line) - len(stripped) + call_end, len(line)


def calls_of_f(line: str) -> list[str]:
    """Argument lists of every `f(...)` call in one line of code, e.g. `x = f(1)` or `print(f('a'))`.

    Small models asked for asserts often write such calls instead; the executor computes the outputs, so
    only the arguments matter.
    """
    line = line.strip()
    if len(line) > 2 * MAX_EXPRESSION_CHARS or "\x00" in line:
        return []
    tree = _parses(line, "exec")
    if tree is None:
        return []
    found = []
    for node in ast.walk(tree):
        is_f = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "f"
        if is_f and (node.args or node.keywords):
            try:
                found.append(ast.unparse(node)[2:-1])
            except (ValueError, RecursionError):
                continue
    return found
