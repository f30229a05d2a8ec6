from __future__ import annotations

from evolve_ai.core.metrics import combine, module_metrics

SOURCE = b'''\
"""doc"""
# comment

def simple(x):
    return x


def branchy(x):
    if x and x > 1 or x < -1:
        for i in range(3):
            x += i
    return [y for y in range(x) if y] if x else None
'''


def test_lines_and_cyclomatic_complexity() -> None:
    measured = module_metrics(SOURCE)
    assert measured.lines == 8
    # branchy: 1, +1 if, +1 or, +1 and, +1 for, +1 conditional expression, +1 comprehension
    assert measured.complexity == {"simple": 1, "branchy": 7}


def test_syntax_errors_count_as_no_functions() -> None:
    assert module_metrics(b"def broken(:\n").complexity == {}


def test_combine_counts_only_expressed_functions() -> None:
    measured = module_metrics(SOURCE)
    metrics = combine([(measured, ("branchy",)), (measured, ())], mutations=4)
    assert (metrics.active_files, metrics.active_functions) == (2, 1)
    assert metrics.lines == 16
    assert metrics.complexity == 7
    assert metrics.mutations == 4
