"""Selection strategies (DESIGN §9): pure functions from a population to deaths and parents.

A strategy is a callable ``(population, params, rng) -> Decision``. Built-ins:
``truncation``, ``tournament``, ``threshold``, ``energy`` and ``none`` (the
control: nobody dies). Plug-ins are named ``module:attr`` or registered under
the entry-point group ``evolve_ai.selection``.

Every strategy obeys the same rules, enforced by ``decide``:
* protected individuals never die, and are never chosen as parents or elite:
  a runnable individual is protected while its current variant (its genome
  since it last changed) has no fitness or fewer than ``min_evaluations``
  evaluations behind it. An agent that has just rewritten its genome is a
  new, unmeasured variant: whatever its previous genome scored says nothing
  about this one;
* the ``elite`` best of the measured individuals are never chosen to die;
* individuals that cannot run (disabled, quarantined) are never ranked, and
  die once their grace is over;
* ``none`` is the control: nobody dies, nobody is born;
* the places freed are refilled up to ``population_size`` from the measured
  survivors, each parent chosen by tournament; with no measured survivor,
  nobody is born (the places wait for the next generation).
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
