"""Geometric progressions.

`constant_ratio` (integer ratio) and `rational_ratio` (ratio p/q, integer
terms) are genuine strategies for the `geometric` and `geometric_fraction`
families. `doubling` is a decoy: "each term doubles" is right on one ratio
only and answers everything.
"""

from fractions import Fraction
from itertools import pairwise

from agent.support import bounded, exact_quotient


def constant_ratio(terms: list[int]) -> int | None:
    """Next term when every term is the previous one times the same integer."""
    if len(terms) < 3 or terms[0] == 0:
        return None
    ratio = exact_quotient(terms[1], terms[0])
    if ratio is None or ratio == 0:
        return None
    if any(later != earlier * ratio for earlier, later in pairwise(terms)):
        return None
    return bounded(terms[-1] * ratio)


def rational_ratio(terms: list[int]) -> int | None:
    """Next term for a constant rational ratio p/q, when that term is an integer."""
    if len(terms) < 3 or 0 in terms:
        return None
    ratio = Fraction(terms[1], terms[0])
    p, q = ratio.numerator, ratio.denominator
    # Cross-multiplying keeps the check in integers: later/earlier == p/q.
    if any(later * q != earlier * p for earlier, later in pairwise(terms)):
        return None
    next_term = exact_quotient(terms[-1] * p, q)
    return None if next_term is None else bounded(next_term)


def doubling(terms: list[int]) -> int | None:
    """Decoy: twice the last term."""
    if not terms:
        return None
    return bounded(2 * terms[-1])
