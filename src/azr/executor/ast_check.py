"""Static checks of untrusted source on its AST: syntax, the entry function `f`, banned modules and names.

This is the first and cheapest layer of defence. It rejects what a well-behaved proposer should never
write; the sandbox (bubblewrap, seccomp, rlimits) contains whatever slips past it.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterable


class RejectedCodeError(ValueError):
    """Source refused before running."""


class MalformedCodeError(RejectedCodeError):
    """Source that cannot run: it does not parse, or the program lacks a usable `f`."""


class BannedCodeError(RejectedCodeError):
    """Source that must not run: it uses a banned module or name."""


def _root_module(dotted: str) -> str:
    return dotted.split(".", 1)[0]


def _check_tree(tree: ast.AST, banned_modules: frozenset[str], banned_names: frozenset[str]) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _root_module(alias.name) in banned_modules:
                    raise BannedCodeError(f"imports banned module {alias.name!r}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and _root_module(module) in banned_modules:
                raise BannedCodeError(f"imports banned module {module!r}")
            for alias in node.names:
                if alias.name in banned_names:
                    raise BannedCodeError(f"imports banned name {alias.name!r}")
        elif isinstance(node, ast.Name):
            if node.id in banned_names:
                raise BannedCodeError(f"uses banned name {node.id!r}")
        elif isinstance(node, ast.Attribute):
            if node.attr in banned_names:
                raise BannedCodeError(f"uses banned attribute {node.attr!r}")
        elif (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name in banned_names
        ):
            raise BannedCodeError(f"defines banned name {node.name!r}")


def _parse(source: str, mode: str, what: str) -> ast.AST:
    try:
        with warnings.catch_warnings():
            # Model code with an invalid escape such as '\d' is still valid Python; the warning is noise.
            warnings.simplefilter("ignore")
            return ast.parse(source, mode=mode)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as error:
        raise MalformedCodeError(f"{what} does not parse: {type(error).__name__}: {error}") from None


def check_program(
    program: str,
    banned_modules: Iterable[str],
    banned_names: Iterable[str],
    require_f: bool = True,
) -> None:
    """Raise `MalformedCodeError` unless `program` parses and defines `f(≥1 parameter)`, and
    `BannedCodeError` if it uses a banned module or name."""
    tree = _parse(program, "exec", "program")
    if require_f:
        entry = [
            node
            for node in tree.body  # type: ignore[attr-defined]
            if isinstance(node, ast.FunctionDef) and node.name == "f"
        ]
        if not entry:
            raise MalformedCodeError("program defines no top-level function `f`")
        arguments = entry[-1].args
        if not (arguments.posonlyargs or arguments.args or arguments.vararg):
            raise MalformedCodeError("`f` takes no positional parameter")
    _check_tree(tree, frozenset(banned_modules), frozenset(banned_names))


def check_expression(
    expression: str, banned_modules: Iterable[str], banned_names: Iterable[str], what: str = "input"
) -> None:
    """Raise `MalformedCodeError` unless `expression` is an argument list (`'a', 3`), `BannedCodeError`
    if it uses anything banned."""
    tree = _parse(f"f({expression})", "eval", what)
    _check_tree(tree, frozenset(banned_modules), frozenset(banned_names))


def check_value_expression(
    expression: str, banned_modules: Iterable[str], banned_names: Iterable[str], what: str = "output"
) -> None:
    """Raise `MalformedCodeError` unless `expression` is one expression, `BannedCodeError` if banned."""
    tree = _parse(expression, "eval", what)
    _check_tree(tree, frozenset(banned_modules), frozenset(banned_names))
