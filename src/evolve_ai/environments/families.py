"""Families of integer sequences, the tasks of the default `sequences` environment.

Pure: every random choice comes from the `random.Random` handed in, so one seed always
yields the same tasks. A task shows 6 to 10 terms and asks for the next one; every term
and answer stays below 2**53 in absolute value, so it survives any JSON implementation.
Each solvable family has a gene of the default template that solves it (see
`_FAMILIES`). Unsolvable families are drawn UNSOLVABLE_SHARE of the time, so that no
genome scores 1; SHARES weighs the solvable ones so that the default template's optimum
is unambiguous (see the comment there).
"""

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType

MIN_TERMS = 6
MAX_TERMS = 10
BOUND = 2**53
UNSOLVABLE_SHARE = 0.175
# Rejection sampling only ever discards rare degenerate draws; this many in a
# row means a bug, not bad luck.
_MAX_ATTEMPTS = 1000

# A generator returns `count` consecutive terms, or None to ask for a new draw.
_Generator = Callable[[random.Random, int], list[int] | None]


@dataclass(frozen=True, slots=True)
class SequenceTask:
    """One task: the shown terms, the expected next term, and its family."""

    family: str
    terms: tuple[int, ...]
    answer: int
    solvable: bool


def _signed(rng: random.Random, bound: int) -> int:
    """A non-zero integer in [-bound, bound]."""
    value = rng.randint(1, bound)
    return value if rng.random() < 0.5 else -value


def _recurrence(seeds: Sequence[int], coefficients: Sequence[int], count: int) -> list[int]:
    """Terms of a(n) = sum(c_k a(n-k)), starting from `seeds`."""
    terms = list(seeds)
    while len(terms) < count:
        terms.append(sum(c * terms[-k] for k, c in enumerate(coefficients, start=1)))
    return terms[:count]


def _determinant3(m: Sequence[Sequence[int]]) -> int:
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


# --- solvable families ------------------------------------------------------


def _arithmetic(rng: random.Random, count: int) -> list[int]:
    start, step = rng.randint(-50, 50), _signed(rng, 12)
    return [start + step * i for i in range(count)]


def _geometric(rng: random.Random, count: int) -> list[int]:
    start, ratio = _signed(rng, 9), rng.choice((-4, -3, -2, 2, 3, 4, 5))
    return [start * ratio**i for i in range(count)]


def _geometric_fraction(rng: random.Random, count: int) -> list[int]:
    denominator = rng.choice((2, 3))
    numerators = [p for p in range(-5, 6) if p and abs(p) != denominator]
    numerator = rng.choice([p for p in numerators if math.gcd(p, denominator) == 1])
    # Scaling by denominator**(count - 1) keeps every term an integer.
    scale = _signed(rng, 3)
    return [scale * numerator**i * denominator ** (count - 1 - i) for i in range(count)]


def _polynomial(rng: random.Random, count: int, degree: int) -> list[int]:
    coefficients = [rng.randint(-9, 9) for _ in range(degree)] + [_signed(rng, 3)]
    start = rng.randint(-3, 5)
    return [
        sum(c * x**power for power, c in enumerate(coefficients))
        for x in range(start, start + count)
    ]


def _quadratic(rng: random.Random, count: int) -> list[int]:
    return _polynomial(rng, count, 2)


def _cubic(rng: random.Random, count: int) -> list[int]:
    return _polynomial(rng, count, 3)


def _fibonacci(rng: random.Random, count: int) -> list[int] | None:
    seeds = [rng.randint(-20, 20), rng.randint(-20, 20)]
    return None if seeds == [0, 0] else _recurrence(seeds, (1, 1), count)


# Order-two coefficients (p, q) that are none of the other families:
# (1, 1) is Fibonacci, (2, -1) arithmetic, (0, 1) periodic, q = 0 geometric.
_ORDER2 = tuple(
    (p, q)
    for p in range(-3, 4)
    for q in range(-3, 4)
    if q != 0 and (p, q) not in {(1, 1), (2, -1), (0, 1)}
)


def _recurrence2(rng: random.Random, count: int) -> list[int] | None:
    seeds = [rng.randint(-9, 9), rng.randint(-9, 9)]
    terms = _recurrence(seeds, rng.choice(_ORDER2), count)
    # A zero determinant (a geometric run, all zeros) leaves (p, q) undetermined.
    return None if terms[1] ** 2 - terms[0] * terms[2] == 0 else terms


def _affine(rng: random.Random, count: int) -> list[int] | None:
    ratio, offset = rng.choice((-3, -2, 2, 3)), _signed(rng, 9)
    terms = [rng.randint(-9, 9)]
    while len(terms) < count:
        terms.append(ratio * terms[-1] + offset)
    # Starting on the fixed point gives a constant sequence: not this family.
    return None if terms[1] == terms[0] else terms


# Order-three recurrences, coefficients within the learner's pool: Tribonacci,
# Padovan, Narayana's cows, Fibonacci plus a constant, and 1, 2, -1.
_ORDER3 = ((1, 1, 1), (0, 1, 1), (1, 0, 1), (2, 0, -1), (1, 2, -1))


def _recurrence3(rng: random.Random, count: int) -> list[int] | None:
    seeds = [rng.randint(-9, 9) for _ in range(3)]
    terms = _recurrence(seeds, rng.choice(_ORDER3), count)
    # Non-singular first windows: the coefficients are the only ones that fit.
    windows = [terms[i : i + 3][::-1] for i in range(3)]
    return None if _determinant3(windows) == 0 else terms


def _minimal_period(block: Sequence[int]) -> int:
    size = len(block)
    return next(p for p in range(1, size + 1) if size % p == 0 and block[p:] == block[:-p])


def _periodic(rng: random.Random, count: int) -> list[int] | None:
    # The period must repeat in full within the shown terms (count - 1 of them).
    period = rng.randint(2, min(4, (count - 1) // 2))
    block = [rng.randint(-9, 20) for _ in range(period)]
    if _minimal_period(block) != period:
        return None
    return [block[i % period] for i in range(count)]


def _interleaved(rng: random.Random, count: int) -> list[int] | None:
    starts = (rng.randint(-20, 20), rng.randint(-20, 20))
    steps = (rng.randint(-9, 9), rng.randint(-9, 9))
    # Equal steps could make the whole sequence one arithmetic progression.
    if steps[0] == steps[1]:
        return None
    return [starts[i % 2] + steps[i % 2] * (i // 2) for i in range(count)]


def _catalan(size: int) -> list[int]:
    return [math.comb(2 * n, n) // (n + 1) for n in range(size)]


def _bell(size: int) -> list[int]:
    # Bell triangle: each row starts with the previous row's last entry.
    values: list[int] = []
    row = [1]
    for _ in range(size):
        values.append(row[0])
        next_row = [row[-1]]
        for entry in row:
            next_row.append(next_row[-1] + entry)
        row = next_row
    return values


def _partitions(size: int) -> list[int]:
    counts = [1] + [0] * (size - 1)
    for part in range(1, size):
        for total in range(part, size):
            counts[total] += counts[total - part]
    return counts


def _motzkin(size: int) -> list[int]:
    values = [1, 1]
    for n in range(2, size):
        values.append(((2 * n + 1) * values[n - 1] + (3 * n - 3) * values[n - 2]) // (n + 2))
    return values[:size]


def _recaman(size: int) -> list[int]:
    values = [0]
    seen = {0}
    for n in range(1, size):
        back = values[-1] - n
        values.append(back if back > 0 and back not in seen else values[-1] + n)
        seen.add(values[-1])
    return values


def _divisor_counts(size: int) -> list[int]:
    return [sum(1 for d in range(1, n + 1) if n % d == 0) for n in range(1, size + 1)]


_FAMOUS_OFFSETS = 5
_FAMOUS_SIZE = _FAMOUS_OFFSETS + MAX_TERMS + 1


@cache
def _famous_sequences() -> tuple[tuple[int, ...], ...]:
    makers = (_catalan, _bell, _partitions, _motzkin, _recaman, _divisor_counts)
    return tuple(tuple(make(_FAMOUS_SIZE)) for make in makers)


def _famous(rng: random.Random, count: int) -> list[int]:
    sequence = rng.choice(_famous_sequences())
    start = rng.randrange(_FAMOUS_OFFSETS)
    return list(sequence[start : start + count])


# --- unsolvable families ----------------------------------------------------


def _noise(rng: random.Random, count: int) -> list[int]:
    return [rng.randint(-999, 999) for _ in range(count)]


@cache
def _primes() -> tuple[int, ...]:
    candidates = range(2, 400)
    return tuple(n for n in candidates if all(n % d for d in range(2, math.isqrt(n) + 1)))


def _primes_offset(rng: random.Random, count: int) -> list[int]:
    primes = _primes()
    start, offset = rng.randrange(len(primes) - count), rng.randint(-500, 500)
    return [p + offset for p in primes[start : start + count]]


def _collatz_path(start: int, limit: int) -> list[int]:
    path = [start]
    while path[-1] != 1 and len(path) < limit:
        value = path[-1]
        path.append(value // 2 if value % 2 == 0 else 3 * value + 1)
    return path


def _collatz(rng: random.Random, count: int) -> list[int] | None:
    skip = rng.randint(0, 5)
    path = _collatz_path(rng.randint(27, 9999), skip + count)
    terms = path[skip:]
    # Far from the 4, 2, 1 cycle, and with two odd steps shown, so that no
    # halving run passes for a geometric sequence.
    if len(terms) < count or min(terms) <= 4 or sum(t % 2 for t in terms[:-1]) < 2:
        return None
    return terms


def _sqrt_digits(rng: random.Random, count: int) -> list[int] | None:
    radicand, skip = rng.randint(2, 999), rng.randint(0, 10)
    if math.isqrt(radicand) ** 2 == radicand:
        return None
    digits = str(math.isqrt(radicand * 10 ** (2 * 3 * (skip + count))))
    fraction = digits[-3 * (skip + count) :]
    # Three-digit chunks of the fractional part: irrational, so never periodic.
    return [int(fraction[3 * i : 3 * i + 3]) for i in range(skip, skip + count)]


@dataclass(frozen=True, slots=True)
class _Family:
    generate: _Generator
    solvable: bool


# The gene of the default template that solves each solvable family is in the comments.
_FAMILIES: dict[str, _Family] = {
    "arithmetic": _Family(_arithmetic, True),  # arithmetic.constant_difference
    "geometric": _Family(_geometric, True),  # integer ratio: geometric.constant_ratio
    "geometric_fraction": _Family(_geometric_fraction, True),  # p/q: geometric.rational_ratio
    "quadratic": _Family(_quadratic, True),  # polynomial.*
    "cubic": _Family(_cubic, True),  # polynomial.*
    "fibonacci": _Family(_fibonacci, True),  # recurrence.fibonacci_like
    "recurrence2": _Family(_recurrence2, True),  # order two: recurrence.linear_order2
    "affine": _Family(_affine, True),  # a(n) = r a(n-1) + c: recurrence.affine
    "recurrence3": _Family(_recurrence3, True),  # order three: learner.learned_recurrence
    "periodic": _Family(_periodic, True),  # periodic.shortest_period
    "interleaved": _Family(_interleaved, True),  # two progressions: interleaved.two_arithmetic
    # Windows of well-known sequences (Catalan, Bell, partitions...) at small offsets: only
    # memory.recall_window solves them, once it has seen a longer overlapping window, so
    # the share it gets depends on the agent's history.
    "famous": _Family(_famous, True),
    "noise": _Family(_noise, False),
    "primes_offset": _Family(_primes_offset, False),
    "collatz": _Family(_collatz, False),
    "sqrt_digits": _Family(_sqrt_digits, False),
}

# Each solvable family's share of all tasks when every family is drawn; they
# add up to 1 - UNSOLVABLE_SHARE. The shares shape the landscape of the
# default template (bench/optimum.py computes it): every gene of the optimum
# must be worth clearly more than its energy cost and every other gene must
# clearly cost, by more than the noise of a fitness measured on a few hundred
# tasks. The optimum's genes each have families of their own, heavily drawn:
# interleaved (two_arithmetic), recurrence3 (learned_recurrence), recurrence2
# and affine (linear_order2), cubic and quadratic (cubic), geometric_fraction
# (rational_ratio). Arithmetic, geometric and fibonacci are solved by those
# genes too (their own genes are redundant there), and two families are rare
# so that their only solvers do not pay: periodic (shortest_period alone
# solves period four) and famous (memory.recall_window, which needs a long
# life to pay at all).
SHARES: Mapping[str, float] = MappingProxyType({
    "arithmetic": 0.06,
    "geometric": 0.05,
    "geometric_fraction": 0.08,
    "quadratic": 0.06,
    "cubic": 0.08,
    "fibonacci": 0.06,
    "recurrence2": 0.10,
    "affine": 0.05,
    "recurrence3": 0.11,
    "periodic": 0.03,
    "interleaved": 0.13,
    "famous": 0.015,
})

FAMILIES: tuple[str, ...] = tuple(_FAMILIES)
SOLVABLE_FAMILIES: tuple[str, ...] = tuple(n for n, f in _FAMILIES.items() if f.solvable)
UNSOLVABLE_FAMILIES: tuple[str, ...] = tuple(n for n, f in _FAMILIES.items() if not f.solvable)


def _pick_family(rng: random.Random, families: Sequence[str]) -> str:
    """Unsolvable families get UNSOLVABLE_SHARE of the draws whenever both kinds are allowed,
    evenly; solvable ones the rest, in proportion to their SHARES."""
    solvable = [name for name in families if _FAMILIES[name].solvable]
    unsolvable = [name for name in families if not _FAMILIES[name].solvable]
    if solvable and unsolvable:
        if rng.random() < UNSOLVABLE_SHARE:
            return rng.choice(unsolvable)
    elif unsolvable:
        return rng.choice(unsolvable)
    return rng.choices(solvable, weights=[SHARES[name] for name in solvable])[0]


def _within_bounds(terms: Sequence[int]) -> bool:
    return all(-BOUND < term < BOUND for term in terms)


def make_task(rng: random.Random, families: Sequence[str] = FAMILIES) -> SequenceTask:
    """Draw one task from `families` (all by default), using only `rng`.

    Raises ValueError for an empty selection or an unknown family name.
    """
    unknown = sorted(set(families) - _FAMILIES.keys())
    if unknown or not families:
        raise ValueError(f"unknown or no sequence families: {unknown or 'none given'}")
    name = _pick_family(rng, families)
    family = _FAMILIES[name]
    for _ in range(_MAX_ATTEMPTS):
        shown = rng.randint(MIN_TERMS, MAX_TERMS)
        terms = family.generate(rng, shown + 1)
        if terms is not None and _within_bounds(terms):
            return SequenceTask(name, tuple(terms[:-1]), terms[-1], family.solvable)
    raise RuntimeError(f"family {name!r} produced no valid task in {_MAX_ATTEMPTS} draws")
