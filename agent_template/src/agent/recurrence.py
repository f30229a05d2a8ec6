"""Linear recurrences of order one and two.

All three are genuine strategies: `fibonacci_like` for the `fibonacci`
family, `linear_order2` for `recurrence2` (integer coefficients solved from
the terms), `affine` for `affine` (a(n) = r * a(n-1) + c). Each checks its
fit on at least one term it was not derived from, so it abstains on
sequences it does not explain.
"""

from collections.abc import Callable

from agent.support import bounded, exact_quotient

_Rule = Callable[[list[int], int], int]


def _consistent(terms: list[int], start: int, rule: _Rule) -> bool:
    """True when rule(terms, i) == terms[i] for every i from `start` on."""
    return all(rule(terms, i) == terms[i] for i in range(start, len(terms)))


def fibonacci_like(terms: list[int]) -> int | None:
    """Next term when each term is the sum of the two before it (4+ terms)."""
    if len(terms) < 4:
        return None
    if not _consistent(terms, 2, lambda t, i: t[i - 1] + t[i - 2]):
        return None
    return bounded(terms[-1] + terms[-2])


def _order2_coefficients(terms: list[int]) -> tuple[int, int] | None:
    """Integer (p, q) with a(i) = p a(i-1) + q a(i-2), from the first solvable window."""
    for i in range(2, len(terms) - 1):
        a0, a1, a2, a3 = terms[i - 2], terms[i - 1], terms[i], terms[i + 1]
        determinant = a1 * a1 - a0 * a2
        if determinant == 0:
            continue
        p = exact_quotient(a2 * a1 - a0 * a3, determinant)
        q = exact_quotient(a1 * a3 - a2 * a2, determinant)
        if p is None or q is None:
            return None
        return p, q
    return None


def linear_order2(terms: list[int]) -> int | None:
    """Next term of a(n) = p a(n-1) + q a(n-2), p and q integers (5+ terms)."""
    if len(terms) < 5:
        return None
    coefficients = _order2_coefficients(terms)
    if coefficients is None:
        return None
    p, q = coefficients
    if not _consistent(terms, 2, lambda t, i: p * t[i - 1] + q * t[i - 2]):
        return None
    return bounded(p * terms[-1] + q * terms[-2])


def affine(terms: list[int]) -> int | None:
    """Next term of a(n) = r a(n-1) + c, r and c integers (4+ terms)."""
    if len(terms) < 4:
        return None
    step = next((i for i in range(1, len(terms) - 1) if terms[i] != terms[i - 1]), None)
    if step is None:
        # No movement at all: a constant sequence, which every affine map with
        # that fixed point continues.
        return bounded(terms[-1]) if terms[-1] == terms[0] else None
    r = exact_quotient(terms[step + 1] - terms[step], terms[step] - terms[step - 1])
    if r is None:
        return None
    c = terms[step] - r * terms[step - 1]
    if not _consistent(terms, 1, lambda t, i: r * t[i - 1] + c):
        return None
    return bounded(r * terms[-1] + c)
