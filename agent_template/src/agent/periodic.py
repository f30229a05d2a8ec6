"""Periodic sequences.

`shortest_period` is a genuine strategy for the `periodic` family: it finds
the smallest period that the terms repeat at least once in full.
"""

from agent.support import bounded


def _has_period(terms: list[int], period: int) -> bool:
    return all(terms[i] == terms[i - period] for i in range(period, len(terms)))


def shortest_period(terms: list[int]) -> int | None:
    """Next term of the shortest period seen repeated in full."""
    for period in range(1, len(terms) // 2 + 1):
        if _has_period(terms, period):
            return bounded(terms[len(terms) - period])
    return None
