"""Polynomial sequences, by finite differences.

`quadratic` and `cubic` are genuine strategies for the `quadratic` and
`cubic` families (and, as lower degrees are included, for arithmetic ones).
`lagrange_extrapolate` is a decoy: it always continues the cubic through the
last four terms, which is right on polynomials and plausible but wrong on
everything else.
"""

from agent.support import all_equal, bounded, differences


def _extrapolate(terms: list[int], degree: int) -> int | None:
    """Continue `terms` when its `degree`-th differences are constant.

    At least two `degree`-th differences are required, so the fit is always
    checked on one term it was not derived from.
    """
    if len(terms) < degree + 2:
        return None
    rows = [list(terms)]
    for _ in range(degree):
        rows.append(differences(rows[-1]))
    if not all_equal(rows[-1]):
        return None
    # The next term is the sum of the last entry of each row, the constant
    # row being repeated once more.
    return bounded(sum(row[-1] for row in rows))


def quadratic(terms: list[int]) -> int | None:
    """Next term when the second differences are constant."""
    return _extrapolate(terms, 2)


def cubic(terms: list[int]) -> int | None:
    """Next term when the third differences are constant."""
    return _extrapolate(terms, 3)


def lagrange_extrapolate(terms: list[int]) -> int | None:
    """Decoy: the cubic through the last four terms, never checked."""
    if len(terms) < 4:
        return None
    a, b, c, d = terms[-4:]
    # Zero fourth difference: next - 4d + 6c - 4b + a = 0.
    return bounded(4 * d - 6 * c + 4 * b - a)
