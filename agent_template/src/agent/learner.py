"""A tiny online learner over linear predictors: the gene for order-three recurrences.

`learned_recurrence` is the only strategy for the `recurrence3` family (Tribonacci,
Padovan...) and also catches arithmetic, Fibonacci-like and period 2 and 3 sequences.
A predictor a(n) = c1 a(n-1) + c2 a(n-2) + c3 a(n-3) answers only when it reproduces
every shown term from the three before it. What it learns across tasks is which
predictors the environment uses: a running score per predictor orders the search and,
when two fitting predictors disagree, picks the familiar one. State lives in this
process only.
"""

from itertools import product

from agent.support import bounded

_Coefficients = tuple[int, int, int]

# Order three only (c3 != 0): lower orders have their own genes.
_POOL: tuple[_Coefficients, ...] = tuple(
    (c1, c2, c3) for c1, c2, c3 in product(range(-1, 3), repeat=3) if c3 != 0
)
# At least three checked windows, so a fit is never a coincidence of the
# three unknowns; the upper bound keeps the cost per task small.
_MIN_TERMS = 6
_MAX_TERMS = 32
# Weight of the newest task in the running scores: about the last 20 count.
_LEARNING_RATE = 0.05

_scores: list[float] = [0.0] * len(_POOL)


def _predict(coefficients: _Coefficients, terms: list[int], index: int) -> int:
    """The term at `index` as this predictor sees it; index may be one past the end."""
    c1, c2, c3 = coefficients
    return c1 * terms[index - 1] + c2 * terms[index - 2] + c3 * terms[index - 3]


def _fits(coefficients: _Coefficients, terms: list[int]) -> bool:
    return all(_predict(coefficients, terms, i) == terms[i] for i in range(3, len(terms)))


def _learn(winner: int | None) -> None:
    """Move the winner's score towards 1 and every other score towards 0."""
    for index, score in enumerate(_scores):
        target = 1.0 if index == winner else 0.0
        _scores[index] = score + _LEARNING_RATE * (target - score)


def learned_recurrence(terms: list[int]) -> int | None:
    """Next term from the first predictor, in learned order, that fits every shown term."""
    if not _MIN_TERMS <= len(terms) <= _MAX_TERMS:
        return None
    # sorted() is stable: equal scores keep pool order, so results are reproducible.
    order = sorted(range(len(_POOL)), key=lambda index: -_scores[index])
    winner = next((index for index in order if _fits(_POOL[index], terms)), None)
    _learn(winner)
    if winner is None:
        return None
    return bounded(_predict(_POOL[winner], terms, len(terms)))


def _forget() -> None:
    """Reset the scores (for tests: a fresh process starts knowing nothing)."""
    _scores[:] = [0.0] * len(_POOL)
