"""The sequence families of the default environment: pure, seeded, bounded."""

import itertools
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from evolve_ai.environments import families
from evolve_ai.environments.families import (
    FAMILIES,
    SOLVABLE_FAMILIES,
    UNSOLVABLE_FAMILIES,
    SequenceTask,
    make_task,
)

# Where evolve_ai is imported from (src/ of a checkout, or site-packages), for a child
# interpreter that starts with nothing but PYTHONPATH.
SOURCES = str(Path(families.__file__).resolve().parents[2])


def _tasks(seed: int, count: int) -> list[SequenceTask]:
    rng = random.Random(seed)
    return [make_task(rng) for _ in range(count)]


def test_same_seed_same_tasks_different_seed_different_tasks() -> None:
    assert _tasks(7, 300) == _tasks(7, 300)
    assert _tasks(7, 300) != _tasks(8, 300)


def test_tasks_do_not_depend_on_string_hashing() -> None:
    # Set iteration order changes with PYTHONHASHSEED; the tasks must not.
    script = (
        "import random; from evolve_ai.environments.families import make_task; "
        "r = random.Random(3); print([make_task(r) for _ in range(200)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": SOURCES},
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_terms_and_answers_are_bounded_ints() -> None:
    for task in _tasks(11, 5000):
        assert families.MIN_TERMS <= len(task.terms) <= families.MAX_TERMS
        values = (*task.terms, task.answer)
        assert all(type(v) is int and abs(v) < 2**53 for v in values), task


def test_unsolvable_share() -> None:
    tasks = _tasks(12, 10_000)
    share = sum(not t.solvable for t in tasks) / len(tasks)
    assert 0.15 <= share <= 0.20


def test_solvable_families_are_drawn_in_proportion_to_their_shares() -> None:
    assert set(families.SHARES) == set(SOLVABLE_FAMILIES)
    assert sum(families.SHARES.values()) == pytest.approx(1 - families.UNSOLVABLE_SHARE)
    tasks = _tasks(18, 40_000)
    seen = Counter(task.family for task in tasks)
    for family, share in families.SHARES.items():
        # Binomial standard error at 40,000 draws is at most 0.0017.
        assert seen[family] / len(tasks) == pytest.approx(share, abs=0.006), family
    for family in UNSOLVABLE_FAMILIES:
        expected = families.UNSOLVABLE_SHARE / len(UNSOLVABLE_FAMILIES)
        assert seen[family] / len(tasks) == pytest.approx(expected, abs=0.006), family


def test_shares_hold_within_a_selection() -> None:
    rng = random.Random(19)
    tasks = [make_task(rng, ("interleaved", "periodic")) for _ in range(4000)]
    share = sum(t.family == "periodic" for t in tasks) / len(tasks)
    expected = families.SHARES["periodic"] / (
        families.SHARES["periodic"] + families.SHARES["interleaved"])
    assert share == pytest.approx(expected, abs=0.03)


def test_every_family_is_reachable_by_default() -> None:
    seen = Counter(task.family for task in _tasks(13, 5000))
    assert set(seen) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_alone(family: str) -> None:
    rng = random.Random(14)
    for _ in range(200):
        task = make_task(rng, (family,))
        assert task.family == family
        assert task.solvable == (family in SOLVABLE_FAMILIES)


def test_families_partition() -> None:
    assert set(SOLVABLE_FAMILIES) | set(UNSOLVABLE_FAMILIES) == set(FAMILIES)
    assert not set(SOLVABLE_FAMILIES) & set(UNSOLVABLE_FAMILIES)
    assert {"noise", "primes_offset"} <= set(UNSOLVABLE_FAMILIES)


def test_share_holds_for_a_mixed_selection() -> None:
    rng = random.Random(15)
    tasks = [make_task(rng, ("arithmetic", "noise")) for _ in range(4000)]
    share = sum(t.family == "noise" for t in tasks) / len(tasks)
    assert 0.14 <= share <= 0.21


@pytest.mark.parametrize("selection", [(), ("arithmetic", "nope")])
def test_unknown_or_empty_selection_is_an_error(selection: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="sequence families"):
        make_task(random.Random(0), selection)


def test_answers_continue_the_rule() -> None:
    # Spot checks of the generators' definitions, independent of any solver.
    rng = random.Random(16)
    for _ in range(300):
        task = make_task(rng, ("arithmetic", "fibonacci", "periodic"))
        t = (*task.terms, task.answer)
        if task.family == "arithmetic":
            assert len({b - a for a, b in itertools.pairwise(t)}) == 1
        elif task.family == "fibonacci":
            assert all(t[i] == t[i - 1] + t[i - 2] for i in range(2, len(t)))
        else:
            assert any(t[-1] == t[-1 - p] for p in range(2, 5))


def test_famous_windows_overlap_so_memory_can_help() -> None:
    # Offsets are small: the same sequence comes back, shifted, often.
    rng = random.Random(17)
    tasks = [make_task(rng, ("famous",)) for _ in range(200)]
    assert len({t.terms[:3] for t in tasks}) < 60
