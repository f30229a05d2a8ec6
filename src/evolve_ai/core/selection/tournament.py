"""Tournament: survivors are the winners of repeated tournaments; the others die.

Unlike truncation, a weak individual can survive by luck of the draw, which
keeps diversity when fitness estimates are noisy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from evolve_ai.core.selection import Decision, Individual, Params, protected, tournament_pick


def tournament_selection(population: Sequence[Individual], params: Params,
                         rng: random.Random) -> Decision:
    eligible = [i for i in population if not protected(i, params)]
    keep = math.ceil(len(eligible) * params.survival)
    survivors: dict[str, Individual] = {}
    pool = list(eligible)
    while len(survivors) < keep and pool:
        winner = tournament_pick(pool, params.tournament_size, rng)
        survivors[winner.id] = winner
        pool = [i for i in pool if i.id != winner.id]
    return Decision(tuple(i.id for i in eligible if i.id not in survivors), ())
