"""The living population in memory, shared by the life cycle's stages.

``LiveAgent`` holds what the store keeps of an agent (under the store's column
names, so that ``persistence`` maps it field for field) plus what only a running
life cycle needs. ``Population`` is the stages' common ground: the agents, the
current template, the pass's events and the genomes first seen in it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from evolve_ai.core.records import Event, Status
from evolve_ai.environments import Task
from evolve_ai.operations.making import Template
from evolve_ai.services.store import Store
from evolve_ai.workers.scan import Stats


@dataclass(slots=True)
class LiveAgent:
    """One living agent as the life cycle sees it."""

    id: str
    status: Status
    reason: str | None
    genome_hash: str
    code_hash: str
    active_files: int = 0
    active_functions: int = 0
    lines: int = 0
    complexity: int = 0
    mutations: int = 0
    fitness: float | None = None  # of the current genome; None until it is measured
    evaluations: int = 0  # every answer scored in its life (shown, never used to select)
    energy: float = 1.0
    idle_generations: int = 0
    template: str | None = None  # its template version's fingerprint
    # -- memory only --
    measured: int = 0  # scores behind ``fitness``: the current genome's, at most a window
    unmeasured_rewrites: int = 0  # new genomes in a row without a measurement between
    scores: deque[float] = field(default_factory=deque)
    pending: dict[str, tuple[Task, float]] = field(default_factory=dict)  # id -> task, deadline
    stats: Stats | None = None  # the last scan's, handed back to the next one
    needs_restart: bool = False
    dirty: bool = False  # to be saved


class Population:
    def __init__(self, generation: int = 0) -> None:
        self.agents: dict[str, LiveAgent] = {}  # oldest first
        self.generation = generation
        self.template: Template | None = None  # the newest version: births use it
        self.versions: dict[str, Template] = {}  # every version living agents may run
        self.events: list[Event] = []  # of this pass, saved with it
        self.new_genomes: dict[str, bytes] = {}  # hash -> bytes, first seen this pass
        self.scored = 0  # tasks scored since this life cycle started (late ones included)

    def event(self, kind: str, agent: str | None, **data: Any) -> None:
        self.events.append(Event(kind=kind, time=time.time(), agent=agent,
                                 data=tuple(data.items())))

    def active(self) -> list[LiveAgent]:
        return [a for a in self.agents.values() if a.status == "active"]

    def living(self) -> list[LiveAgent]:
        return [a for a in self.agents.values() if a.status != "dead"]

    def genome(self, genome_hash: str, store: Store) -> bytes | None:
        """A genome's bytes: first seen this pass (not yet saved), else from the store."""
        return self.new_genomes.get(genome_hash) or store.genome_bytes(genome_hash)

    def absorb(self, events: Iterable[Event]) -> None:
        """Take the supervisor's events: a disabled agent's status, tasks lost with a process."""
        for event in events:
            self.events.append(event)
            agent = self.agents.get(event.agent or "")
            if agent is None:
                continue
            if event.kind == "disabled":
                agent.status, agent.reason = "disabled", str(dict(event.data)["reason"])
                agent.dirty = True
            if event.kind in ("crashed", "stopped", "started"):
                agent.pending.clear()
                agent.dirty = True
