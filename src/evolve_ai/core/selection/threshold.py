"""Threshold: every evaluated individual below an absolute fitness dies."""

from __future__ import annotations

import random
from collections.abc import Sequence

from evolve_ai.core.selection import Decision, Individual, Params, protected, score


def threshold(population: Sequence[Individual], params: Params,
              rng: random.Random) -> Decision:
    return Decision(tuple(i.id for i in population
                          if not protected(i, params) and score(i) < params.threshold), ())
