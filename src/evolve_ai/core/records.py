"""Plain, picklable records passed between workers, services and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from evolve_ai.core.statuses import PROCESS_STATES, STATUSES

__all__ = ["PROCESS_STATES", "STATUSES", "AgentRecord", "Event"]


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One agent's row in the global listing."""

    id: str
    status: str
    generation: int
    parent: str | None
    genome_hash: str
    code_hash: str
    created: float
    active_files: int
    active_functions: int


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, for the log, the database and the hooks."""

    kind: str
    time: float
    agent: str | None = None
    data: tuple[tuple[str, object], ...] = ()
