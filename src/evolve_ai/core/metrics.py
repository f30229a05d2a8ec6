"""Structural metrics of an agent's expressed code, computed with ``ast`` (never imported)."""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Each of these adds one independent path through a function (McCabe).
_BRANCHES = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.IfExp, ast.ExceptHandler,
             ast.With, ast.AsyncWith, ast.Assert, ast.comprehension, ast.match_case)


@dataclass(frozen=True, slots=True)
class ModuleMetrics:
    lines: int  # non-blank, non-comment source lines
    complexity: dict[str, int]  # public and private top-level function -> cyclomatic complexity


@dataclass(frozen=True, slots=True)
class Metrics:
    active_files: int
    active_functions: int
    lines: int  # lines of the active modules
    complexity: int  # summed complexity of the expressed functions
    mutations: int


def module_metrics(source: bytes) -> ModuleMetrics:
    """Lines and per-function complexity of one module (a syntax error counts as empty)."""
    text = source.decode("utf-8", "replace")
    lines = sum(1 for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#"))
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return ModuleMetrics(lines, {})
    complexity = {
        node.name: _complexity(node) for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    return ModuleMetrics(lines, complexity)


def _complexity(function: ast.AST) -> int:
    score = 1
    for node in ast.walk(function):
        if isinstance(node, _BRANCHES):
            score += 1
        elif isinstance(node, ast.BoolOp):
            score += len(node.values) - 1
    return score


def combine(expressed: list[tuple[ModuleMetrics, tuple[str, ...]]], mutations: int) -> Metrics:
    """Metrics of an agent from its active modules' metrics and expressed functions."""
    return Metrics(
        active_files=len(expressed),
        active_functions=sum(len(names) for _, names in expressed),
        lines=sum(m.lines for m, _ in expressed),
        complexity=sum(m.complexity.get(name, 1) for m, names in expressed for name in names),
        mutations=mutations,
    )
