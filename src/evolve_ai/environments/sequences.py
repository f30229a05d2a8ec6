"""The default environment: continue an integer sequence.

Accuracy over the agent's window, minus an energy cost per expressed function
gene, clipped to [0, 1]: more genes is not free (docs/protocol.md, "Tasks, answers
and scores").
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from evolve_ai.environments import Settings, Task
from evolve_ai.environments.families import make_task


class SequencesEnvironment:
    def __init__(self, settings: Settings) -> None:
        self.energy_cost = settings.energy_cost
        self._serial = 0

    def make_tasks(self, rng: random.Random, count: int) -> list[Task]:
        tasks = []
        for _ in range(count):
            self._serial += 1
            drawn = make_task(rng)
            tasks.append(Task(id=f"s{self._serial}", data=list(drawn.terms),
                              expected=drawn.answer))
        return tasks

    def score(self, task: Task, value: object) -> float:
        # bool is an int in Python; an agent answering True has not answered 1.
        exact = type(value) is int and value == task.expected
        return 1.0 if exact else 0.0

    def fitness(self, scores: Sequence[float], genes: int) -> float:
        if not scores:
            return 0.0
        accuracy = sum(scores) / len(scores)
        return min(1.0, max(0.0, accuracy - self.energy_cost * genes))
