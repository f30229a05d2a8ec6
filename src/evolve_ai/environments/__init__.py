"""Environments make tasks and score answers; the default is ``sequences``.

An environment is any object with the three methods of ``Environment``. It is
named in ``evolve.toml`` as ``sequences``, as ``module:attr`` (a class or a
factory called with the settings), or as an entry point of the group
``evolve_ai.environments``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from evolve_ai.plugins import load_plugin


@dataclass(frozen=True, slots=True)
class Task:
    """One problem: ``data`` goes to the agent, ``expected`` never leaves the orchestrator."""

    id: str
    data: Any
    expected: Any


@dataclass(frozen=True, slots=True)
class Settings:
    """What every environment is given (from ``[evaluation]`` in evolve.toml)."""

    energy_cost: float  # fitness lost per expressed function gene


class Environment(Protocol):
    def make_tasks(self, rng: random.Random, count: int) -> list[Task]:
        """``count`` new tasks drawn from ``rng`` (the orchestrator seeds it)."""

    def score(self, task: Task, value: object) -> float:
        """The score in [0, 1] of ``value`` as an answer to ``task``; anything goes as value."""

    def fitness(self, scores: Sequence[float], genes: int) -> float:
        """Fitness in [0, 1] from an agent's recent scores and its expressed gene count."""


GROUP = "evolve_ai.environments"  # entry-point group of plug-in environments

# The built-in environments by name (listed once: config validation derives from it),
# each a factory called with the settings, named so that listing imports none.
BUILTIN: dict[str, str] = {
    "sequences": "evolve_ai.environments.sequences:SequencesEnvironment",
}


def load_environment(name: str, settings: Settings) -> Environment:
    """A built-in by name, else a plug-in (``module:attr`` or an entry point of GROUP)."""
    factory = load_plugin(BUILTIN.get(name, name), GROUP, "environment")
    environment: Environment = factory(settings)
    return environment
