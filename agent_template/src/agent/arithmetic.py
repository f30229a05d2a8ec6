"""Arithmetic progressions.

`constant_difference` is a genuine strategy for the `arithmetic` family.
`average_step` is a decoy: it extrapolates with the mean step, which is
exactly right on arithmetic progressions but confidently wrong on almost
everything else. As this module sorts first, an expressed `average_step`
shadows every strategy that comes after it.
"""

from agent.support import all_equal, bounded, differences, rounded_quotient


def constant_difference(terms: list[int]) -> int | None:
    """Next term when all consecutive differences are equal (3+ terms)."""
    if len(terms) < 3:
        return None
    steps = differences(terms)
    if not all_equal(steps):
        return None
    return bounded(terms[-1] + steps[0])


def average_step(terms: list[int]) -> int | None:
    """Decoy: last term plus the mean step, whatever the sequence."""
    if len(terms) < 2:
        return None
    step = rounded_quotient(terms[-1] - terms[0], len(terms) - 1)
    return bounded(terms[-1] + step)
