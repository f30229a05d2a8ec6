"""Rules of thumb: all decoys.

Each answers almost every task with a value that looks reasonable for a
sequence and is rarely the next term. Expressed before a genuine strategy in
registry order, a decoy shadows it, so carrying these genes costs fitness
twice: their energy and the answers they steal.
"""

from fractions import Fraction

from agent.support import bounded, rounded_quotient


def repeat_last(terms: list[int]) -> int | None:
    """Decoy: the sequence stays where it is."""
    if not terms:
        return None
    return bounded(terms[-1])


def increment_last(terms: list[int]) -> int | None:
    """Decoy: the sequence counts up by one."""
    if not terms:
        return None
    return bounded(terms[-1] + 1)


def mean_guess(terms: list[int]) -> int | None:
    """Decoy: the sequence returns to its mean."""
    if not terms:
        return None
    return bounded(rounded_quotient(sum(terms), len(terms)))


def linear_trend(terms: list[int]) -> int | None:
    """Decoy: the least-squares line through all terms, extrapolated and rounded.

    Right on arithmetic progressions, so it looks like a solver; wrong as soon
    as the sequence curves.
    """
    count = len(terms)
    if count < 3:
        return None
    # Exact sums in integers: floats would overflow on huge terms.
    xs = range(count)
    sum_x, sum_y = sum(xs), sum(terms)
    sum_xx = sum(x * x for x in xs)
    sum_xy = sum(x * y for x, y in zip(xs, terms, strict=True))
    slope = Fraction(count * sum_xy - sum_x * sum_y, count * sum_xx - sum_x * sum_x)
    estimate = Fraction(sum_y, count) + slope * (count - Fraction(sum_x, count))
    return bounded(rounded_quotient(estimate.numerator, estimate.denominator))
