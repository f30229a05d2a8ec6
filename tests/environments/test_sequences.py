from __future__ import annotations

import random

from evolve_ai.environments import Settings, load_environment


def test_tasks_are_seeded_and_scored_exactly() -> None:
    env = load_environment("sequences", Settings(energy_cost=0.01))
    first = env.make_tasks(random.Random(5), 20)
    again = load_environment("sequences", Settings(energy_cost=0.01)).make_tasks(
        random.Random(5), 20)
    assert [(t.data, t.expected) for t in first] == [(t.data, t.expected) for t in again]
    assert len({t.id for t in first}) == 20
    task = first[0]
    assert env.score(task, task.expected) == 1.0
    assert env.score(task, task.expected + 1) == 0.0
    assert env.score(task, str(task.expected)) == 0.0
    assert env.score(task, float(task.expected)) == 0.0
    assert env.score(task, None) == 0.0


def test_bool_is_not_an_integer_answer() -> None:
    env = load_environment("sequences", Settings(energy_cost=0.0))
    tasks = [t for t in env.make_tasks(random.Random(1), 500) if t.expected == 1]
    for task in tasks:
        assert env.score(task, True) == 0.0


def test_fitness_is_accuracy_minus_energy_clipped() -> None:
    env = load_environment("sequences", Settings(energy_cost=0.05))
    assert env.fitness([], 3) == 0.0
    assert env.fitness([1.0, 0.0, 1.0, 1.0], 2) == 0.75 - 0.1
    assert env.fitness([0.0, 0.0], 10) == 0.0
    assert env.fitness([1.0], 0) == 1.0
