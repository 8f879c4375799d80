"""How complex and how diverse the proposed programs are, measured as the paper does.

Complexity: AST node count and cyclomatic complexity (radon's total over the program). Diversity: the
tree edit distance (Zhang-Shasha, from zss) between the ASTs of a new program and of reference programs,
nodes labelled by their AST class so that renaming a variable costs nothing but changing control flow
does; and the answer spread, distinct outputs over tasks.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import zss
from radon.visitors import ComplexityVisitor


@dataclass(frozen=True)
class Complexity:
    ast_nodes: int
    cyclomatic: int


def complexity(program: str) -> Complexity | None:
    """None for a program that does not parse (buffer programs always do; samples may not)."""
    try:
        tree = ast.parse(program)
        cyclomatic = ComplexityVisitor.from_ast(tree).total_complexity
    except (SyntaxError, ValueError, RecursionError):
        return None
    return Complexity(sum(1 for _ in ast.walk(tree)), cyclomatic)


def _label(node: ast.AST) -> str:
    return type(node).__name__


def _children(node: ast.AST) -> list[ast.AST]:
    # Expression contexts (Load, Store) are one shared object per kind; they say nothing about shape.
    return [child for child in ast.iter_child_nodes(node) if not isinstance(child, ast.expr_context)]


@lru_cache(maxsize=4096)
def _tree(program: str) -> ast.AST | None:
    try:
        return ast.parse(program)
    except (SyntaxError, ValueError, RecursionError):
        return None


def ast_edit_distance(a: str, b: str) -> int | None:
    """Unit-cost tree edit distance between the ASTs of two programs; None if either does not parse."""
    tree_a, tree_b = _tree(a), _tree(b)
    if tree_a is None or tree_b is None:
        return None
    return int(zss.simple_distance(tree_a, tree_b, get_children=_children, get_label=_label))


def mean_distance_to_references(
    programs: Sequence[str], references: Sequence[str], rng: random.Random, k: int
) -> float | None:
    """Mean AST edit distance of each program to k references drawn at random (without the program
    itself), as a proposer prompt shows k references; None when nothing could be compared."""
    distances = []
    for program in programs:
        pool = [ref for ref in references if ref != program]
        for reference in rng.sample(pool, min(k, len(pool))):
            distance = ast_edit_distance(program, reference)
            if distance is not None:
                distances.append(distance)
    return sum(distances) / len(distances) if distances else None


def answer_spread(outputs: Sequence[str]) -> float | None:
    """Distinct outputs over the number of tasks: 1.0 when every task has its own answer."""
    return len(set(outputs)) / len(outputs) if outputs else None
