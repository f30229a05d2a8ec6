"""Interleaved sequences: even and odd positions follow separate rules.

`two_arithmetic` is a genuine strategy for the `interleaved` family (each
half an arithmetic progression). `zigzag` is a decoy: it bets the sequence
alternates and answers the second-to-last term, right on period-two
sequences and wrong on nearly everything else.
"""

from agent.support import all_equal, bounded, differences


def two_arithmetic(terms: list[int]) -> int | None:
    """Next term when both interleaved halves are arithmetic (6+ terms)."""
    if len(terms) < 6:
        return None
    evens, odds = terms[0::2], terms[1::2]
    even_steps, odd_steps = differences(evens), differences(odds)
    if not (all_equal(even_steps) and all_equal(odd_steps)):
        return None
    # The next term continues the half that the position len(terms) belongs to.
    half, steps = (evens, even_steps) if len(terms) % 2 == 0 else (odds, odd_steps)
    return bounded(half[-1] + steps[0])


def zigzag(terms: list[int]) -> int | None:
    """Decoy: the term before last, as if the sequence alternated."""
    if len(terms) < 2:
        return None
    return bounded(terms[-2])
