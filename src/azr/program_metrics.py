"""How complex and how diverse the proposed programs are, measured as the paper does.

Complexity: AST node count and cyclomatic complexity (radon's total over the program). Diversity: the
tree edit distance (APTED, from the apted package) between the ASTs of a new program and of reference
programs, nodes labelled by their AST class so that renaming a variable costs nothing but changing
control flow does; and the answer spread, distinct outputs over tasks.
"""

from __future__ import annotations

import ast
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from apted import APTED, Config
from radon.visitors import ComplexityVisitor


@dataclass(frozen=True)
class Complexity:
    ast_nodes: int
    cyclomatic: int


@lru_cache(maxsize=4096)
def _tree(program: str) -> ast.AST | None:
    try:
        with warnings.catch_warnings():
            # Model-written code is full of invalid escapes like '\d'; they are the program's business.
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def complexity(program: str) -> Complexity | None:
    """None for a program that does not parse (buffer programs always do; samples may not)."""
    tree = _tree(program)
    if tree is None:
        return None
    try:
        cyclomatic = ComplexityVisitor.from_ast(tree).total_complexity
    except RecursionError:
        return None
    return Complexity(sum(1 for _ in ast.walk(tree)), cyclomatic)


class _AstShape(Config):
    """Unit costs; nodes match when they are the same AST class, whatever names or constants they hold."""

    def rename(self, node_a: ast.AST, node_b: ast.AST) -> int:
        return 0 if type(node_a) is type(node_b) else 1

    def children(self, node: ast.AST) -> list[ast.AST]:
        # Expression contexts (Load, Store) are one shared object per kind; they say nothing about shape.
        return [child for child in ast.iter_child_nodes(node) if not isinstance(child, ast.expr_context)]


def ast_edit_distance(a: str, b: str) -> int | None:
    """Unit-cost tree edit distance between the ASTs of two programs; None if either does not parse."""
    tree_a, tree_b = _tree(a), _tree(b)
    if tree_a is None or tree_b is None:
        return None
    return int(APTED(tree_a, tree_b, _AstShape()).compute_edit_distance())


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
