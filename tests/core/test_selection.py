from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve_ai.core.selection import Individual, Params, decide, none_strategy
from evolve_ai.core.selection.builtins import BUILTIN, load_strategy


def ind(name: str, fitness: float | None, measured: int = 20, runnable: bool = True,
        idle: int = 0, energy: float = 1.0) -> Individual:
    return Individual(name, fitness, measured, runnable, idle, energy)


@st.composite
def populations(draw: st.DrawFn) -> list[Individual]:
    size = draw(st.integers(1, 40))
    return [ind(f"a{i:02d}", draw(st.none() | st.floats(0, 1)), draw(st.integers(0, 30)),
                draw(st.booleans() | st.just(True)), draw(st.integers(0, 3)),
                draw(st.floats(-1, 3)))
            for i in range(size)]


@settings(max_examples=300, deadline=None)
@given(populations(), st.sampled_from(sorted(BUILTIN)), st.integers(1, 60), st.integers(0, 3),
       st.randoms(use_true_random=False))
def test_every_strategy_keeps_the_rules(population: list[Individual], name: str, size: int,
                                        elite: int, rng: random.Random) -> None:
    params = Params(population_size=size, elite=elite)
    decision = decide(load_strategy(name), population, params, rng)
    ids = {i.id for i in population}
    assert set(decision.deaths) <= ids
    assert len(set(decision.deaths)) == len(decision.deaths)
    dead = set(decision.deaths)
    survivors = [i for i in population if i.id not in dead]

    def unmeasured(i: Individual) -> bool:
        return i.runnable and (i.fitness is None or i.measured < params.min_evaluations)

    for individual in population:
        if unmeasured(individual):
            assert individual.id not in dead, "a protected individual died"
            assert individual.id not in decision.parents, "an untested variant is a parent"
        if name != "none" and not individual.runnable:
            spent = individual.idle_generations >= params.grace
            assert (individual.id in dead) == spent, "grace not respected"
    evaluated = sorted((i for i in population if i.runnable and not unmeasured(i)),
                       key=lambda i: (-i.fitness, i.id))  # type: ignore[operator]
    for best in evaluated[:elite]:
        assert best.id not in dead, "an elite individual died"
    parents_pool = {i.id for i in survivors if i.runnable and not unmeasured(i)}
    assert set(decision.parents) <= parents_pool
    if name == "none":
        assert decision.parents == ()
    elif parents_pool:
        assert len(survivors) + len(decision.parents) == max(size, len(survivors))
    else:
        assert decision.parents == (), "nobody to copy: the places wait"


def test_same_seed_same_decision() -> None:
    population = [ind(f"a{i}", i / 10) for i in range(10)]
    for name in BUILTIN:
        strategy = load_strategy(name)
        params = Params(population_size=10)
        first = decide(strategy, population, params, random.Random(3))
        again = decide(strategy, list(reversed(population)), params, random.Random(3))
        assert first == again, name


def test_truncation_kills_the_worst_half() -> None:
    population = [ind(f"a{i}", i / 10) for i in range(10)]
    decision = decide(load_strategy("truncation"), population, Params(population_size=10),
                      random.Random(0))
    assert sorted(decision.deaths) == [f"a{i}" for i in range(5)]
    assert len(decision.parents) == 5
    assert all(int(p[1:]) >= 5 for p in decision.parents)


def test_threshold_and_protection() -> None:
    population = [ind("low", 0.1), ind("young", 0.0, measured=2), ind("high", 0.9)]
    decision = decide(load_strategy("threshold"), population, Params(population_size=3, elite=0),
                      random.Random(0))
    assert decision.deaths == ("low",)


def test_energy_accumulates_and_starves() -> None:
    population = [ind("rich", 0.0, energy=2.0), ind("poor", 0.1, energy=0.1),
                  ind("good", 0.9, energy=1.0)]
    decision = decide(load_strategy("energy"), population, Params(population_size=3, elite=0,
                                                           metabolism=0.25), random.Random(0))
    assert decision.deaths == ("poor",)
    levels = dict(decision.energies)
    assert levels["rich"] == pytest.approx(1.75)
    assert levels["good"] == pytest.approx(1.65)


def test_spent_agents_die_after_their_grace() -> None:
    population = [ind("ok", 0.5), ind("broken", None, runnable=False, idle=0),
                  ind("old", None, runnable=False, idle=1)]
    control = decide(none_strategy, population, Params(population_size=3), random.Random(0))
    assert control.deaths == () and control.parents == ()
    refilled = decide(load_strategy("truncation"), population, Params(population_size=3, elite=1),
                      random.Random(0))
    assert "old" in refilled.deaths and "broken" not in refilled.deaths
    assert set(refilled.parents) <= {"ok"}


def test_a_fresh_variant_is_spared_but_never_copied() -> None:
    """An agent that has just mutated keeps its old fitness nowhere: it is unmeasured."""
    population = [ind("fresh", 0.9, measured=0), ind("unscored", None, measured=30),
                  ind("good", 0.6), ind("bad", 0.1), ind("worse", 0.05)]
    for name in ("truncation", "tournament", "threshold"):
        decision = decide(load_strategy(name), population, Params(population_size=5, elite=0),
                          random.Random(0))
        assert "fresh" not in decision.deaths and "unscored" not in decision.deaths, name
        assert not {"fresh", "unscored"} & set(decision.parents), name
        assert decision.parents, name


def test_elite_is_chosen_among_measured_variants() -> None:
    population = [ind("lucky", 1.0, measured=2), ind("best", 0.7), ind("rest", 0.2)]
    decision = decide(load_strategy("threshold"), population,
                      Params(population_size=3, elite=1, threshold=0.75), random.Random(0))
    assert decision.deaths == ("rest",)  # "best" is the elite, "lucky" only protected


def test_no_birth_without_a_measured_survivor() -> None:
    population = [ind("a", None, measured=0), ind("b", 0.5, measured=1)]
    decision = decide(load_strategy("truncation"), population, Params(population_size=6),
                      random.Random(0))
    assert decision == decide(load_strategy("truncation"), population, Params(population_size=6),
                              random.Random(1))
    assert decision.deaths == () and decision.parents == ()
