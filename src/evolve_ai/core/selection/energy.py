"""Energy: each generation an individual gains its fitness and pays ``metabolism``.

Individuals whose reserve falls to zero or below die; the reserve is capped so
that a long good run cannot buy immortality. Selection pressure is gentle and
history-dependent: a good individual survives a bad generation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from evolve_ai.core.selection import Decision, Individual, Params, protected, score

CAPACITY = 3.0
START = 1.0  # the reserve every individual is born with


def energy(population: Sequence[Individual], params: Params, rng: random.Random) -> Decision:
    levels = []
    deaths = []
    for individual in population:
        reserve = individual.energy
        if not protected(individual, params):
            reserve = min(CAPACITY, reserve + score(individual) - params.metabolism)
        levels.append((individual.id, reserve))
        if reserve <= 0:
            deaths.append(individual.id)
    return Decision(tuple(deaths), (), tuple(levels))
