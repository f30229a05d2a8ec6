"""Truncation: the worst ``1 - survival`` of the evaluated population die."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from evolve_ai.core.selection import Decision, Individual, Params, protected, ranked


def truncation(population: Sequence[Individual], params: Params,
               rng: random.Random) -> Decision:
    eligible = [i for i in population if not protected(i, params)]
    keep = math.ceil(len(eligible) * params.survival)
    return Decision(tuple(i.id for i in ranked(eligible)[keep:]), ())
