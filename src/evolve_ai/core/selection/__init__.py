"""Selection strategies: pure functions from a population to deaths and parents.

A strategy is a callable ``(population, params, rng) -> Decision``: the built-ins
``truncation``, ``tournament``, ``threshold``, ``energy`` and ``none`` (the control:
nobody dies, nobody is born), or a plug-in (``module:attr`` or the entry-point group
``evolve_ai.selection``). A strategy proposes deaths; ``decide`` chooses the parents and
enforces the rules all strategies share (docs/design.md, "A pass"): a runnable individual
whose current variant has no fitness or fewer than ``min_evaluations`` evaluations is
protected (never dies, never a parent nor elite); the ``elite`` best never die; those that
cannot run are never ranked and die once their grace is over; freed places are refilled
from the measured survivors by tournament, and wait when there are none.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Individual:
    id: str
    fitness: float | None  # of its current variant; None until that variant is measured
    measured: int  # scores behind ``fitness``: the current variant's, not a lifetime count
    runnable: bool  # False for disabled and quarantined agents
    idle_generations: int  # generations spent not runnable
    energy: float = 1.0  # reserve for the energy strategy (born with 1.0)


@dataclass(frozen=True, slots=True)
class Params:
    population_size: int
    survival: float = 0.5  # share kept by truncation and tournament
    elite: int = 1
    tournament_size: int = 3
    threshold: float = 0.2
    min_evaluations: int = 8
    grace: int = 1  # generations a disabled/quarantined agent is kept before it counts as dead
    metabolism: float = 0.25  # energy spent per generation (energy strategy)


@dataclass(frozen=True, slots=True)
class Decision:
    deaths: tuple[str, ...]
    parents: tuple[str, ...]  # one entry per birth, a parent may repeat
    energies: tuple[tuple[str, float], ...] = ()  # new energy levels (energy strategy)


Strategy = Callable[[Sequence[Individual], Params, random.Random], Decision]


def score(individual: Individual) -> float:
    return individual.fitness if individual.fitness is not None else 0.0


def protected(individual: Individual, params: Params) -> bool:
    """Runnable but not measured enough to be judged: spared, and not a parent or elite."""
    return individual.runnable and (individual.fitness is None
                                    or individual.measured < params.min_evaluations)


def measured(population: Sequence[Individual], params: Params) -> list[Individual]:
    """The runnable individuals whose current variant can be judged."""
    return [i for i in population if i.runnable and not protected(i, params)]


def ranked(population: Sequence[Individual]) -> list[Individual]:
    """Best first; ties broken by id so that the order never depends on input order."""
    return sorted(population, key=lambda i: (-score(i), i.id))


def elite_ids(population: Sequence[Individual], params: Params) -> set[str]:
    return {i.id for i in ranked(measured(population, params))[: params.elite]}


def tournament_pick(pool: Sequence[Individual], size: int, rng: random.Random) -> Individual:
    """The best of ``size`` drawn with replacement from ``pool`` (non-empty)."""
    contenders = [pool[rng.randrange(len(pool))] for _ in range(max(1, size))]
    return ranked(contenders)[0]


def decide(strategy: Strategy, population: Sequence[Individual], params: Params,
           rng: random.Random) -> Decision:
    """Run ``strategy`` and enforce the rules every strategy shares (see module docstring)."""
    if strategy is none_strategy:
        return Decision((), ())  # the control: not even spent agents are removed
    population = sorted(population, key=lambda i: i.id)  # input order never matters
    spent = {i.id for i in population if not i.runnable and i.idle_generations >= params.grace}
    # Agents that cannot run are kept for inspection during their grace, never ranked.
    candidates = [i for i in population if i.runnable]
    proposal = strategy(candidates, params, rng)
    spared = elite_ids(candidates, params) | {i.id for i in candidates if protected(i, params)}
    known = {i.id for i in candidates}
    deaths = [d for d in dict.fromkeys(proposal.deaths) if d in known and d not in spared]
    deaths += sorted(spent)
    dead = set(deaths)
    # Parents only among measured survivors: an untested variant is never copied.
    survivors = measured([i for i in population if i.id not in dead], params)
    places = max(0, params.population_size - (len(population) - len(dead)))
    if not survivors:
        return Decision(tuple(deaths), (), proposal.energies)
    parents = tuple(tournament_pick(survivors, params.tournament_size, rng).id
                    for _ in range(places))
    return Decision(tuple(deaths), parents, proposal.energies)


def none_strategy(population: Sequence[Individual], params: Params,
                  rng: random.Random) -> Decision:
    """The control: nobody dies, nobody is born."""
    return Decision((), ())
