"""Numeric helpers shared by the strategy modules.

Core module: always present and never a gene, so that switching a strategy
module off can never break another one that relies on these helpers.
"""

from collections.abc import Sequence
from fractions import Fraction
from itertools import pairwise

__evolve__ = "core"

# Answers must fit in a signed 64-bit integer on the orchestrator side, with
# headroom; anything larger is treated as "not confident".
LIMIT = 2**62


def bounded(value: int | Fraction | None) -> int | None:
    """Return `value` as an int if it is integral and within LIMIT, else None."""
    if isinstance(value, Fraction):
        if value.denominator != 1:
            return None
        value = value.numerator
    if value is None or not -LIMIT < value < LIMIT:
        return None
    return value


def differences(terms: Sequence[int]) -> list[int]:
    """First differences: terms[i + 1] - terms[i]."""
    return [later - earlier for earlier, later in pairwise(terms)]


def all_equal(values: Sequence[int]) -> bool:
    """True when every value equals the first (vacuously true when empty)."""
    return all(value == values[0] for value in values)


def exact_quotient(numerator: int, denominator: int) -> int | None:
    """numerator / denominator when it is an integer, else None."""
    if denominator == 0:
        return None
    quotient, remainder = divmod(numerator, denominator)
    return None if remainder else quotient


def rounded_quotient(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, in exact integer arithmetic.

    Floats would overflow or lose precision on the huge integers a hostile
    task may contain.
    """
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    return (2 * numerator + denominator) // (2 * denominator)
