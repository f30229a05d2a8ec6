"""A small memory of the sequences this agent has been shown.

`recall_window` is a genuine strategy for sequences that come back: it
remembers every window of every task it sees, with the term that followed
it, and answers a task that is such a window. It is the only gene that
solves the `famous` family (well-known sequences shown from varying
offsets), and only once an overlapping, longer window has been seen, so its
worth grows with the agent's life. State lives in this process only.
"""

from agent.support import LIMIT

# Windows shorter than a task are ambiguous across families ([1, 2, 3, 4]
# starts many sequences); tasks show 6 to 10 terms.
_MIN_WINDOW = 6
_MAX_WINDOW = 12
# Bounded so a long-lived agent cannot grow without limit: a 10-term task
# leaves 10 windows, so the last several hundred tasks are remembered.
_CAPACITY = 8192

_next_term: dict[tuple[int, ...], int] = {}


def _fits(terms: list[int]) -> bool:
    return len(terms) <= _MAX_WINDOW and all(-LIMIT < term < LIMIT for term in terms)


def _remember(terms: list[int]) -> None:
    """Store each window of `terms` that has a following term."""
    for end in range(_MIN_WINDOW, len(terms)):
        for start in range(end - _MIN_WINDOW + 1):
            key = tuple(terms[start:end])
            # Re-inserting moves the key to the back, so eviction drops the
            # least recently seen window.
            _next_term.pop(key, None)
            _next_term[key] = terms[end]
    while len(_next_term) > _CAPACITY:
        del _next_term[next(iter(_next_term))]


def recall_window(terms: list[int]) -> int | None:
    """The term that followed these exact terms in an earlier task, if any."""
    if not _fits(terms):
        return None
    answer = _next_term.get(tuple(terms))
    _remember(terms)
    return answer


def _forget() -> None:
    """Empty the memory (for tests: a fresh process starts empty)."""
    _next_term.clear()
