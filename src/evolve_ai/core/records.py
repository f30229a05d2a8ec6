"""The typed records passed between workers, services, operations and the CLI.

One record per concept: the store's column lists are derived from ``AgentRow`` and
``AgentUpdate``, so a column is named once. NamedTuples, not dataclasses: the quick
``evolve status`` path reads rows without importing dataclasses.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

Status = Literal["active", "disabled", "quarantined", "dead"]
ProcessState = Literal["stopped", "starting", "running", "backoff", "exited"]
ScanOutcome = Literal["ok", "quarantined", "disabled"]

STATUSES: tuple[Status, ...] = get_args(Status)
PROCESS_STATES: tuple[ProcessState, ...] = get_args(ProcessState)


class AgentRow(NamedTuple):
    """One agent as the store keeps it (the ``agents`` table, column for column)."""

    id: str
    status: Status
    generation: int  # the generation it was born in
    parent: str | None
    genome_hash: str
    code_hash: str
    created: float
    updated: float
    reason: str | None = None
    active_files: int = 0
    active_functions: int = 0
    lines: int = 0
    complexity: int = 0
    mutations: int = 0
    fitness: float | None = None  # of its current genome; None until measured
    evaluations: int = 0  # every answer scored in its life (shown, never used to select)
    restarts: int = 0
    process: ProcessState = "stopped"
    pid: int | None = None
    pid_started: float | None = None  # psutil create_time, to recognise the process later
    energy: float = 1.0
    idle_generations: int = 0
    template: str | None = None  # the fingerprint of the template version it runs


class AgentUpdate(NamedTuple):
    """What a pass may change about a living agent."""

    id: str
    status: Status
    reason: str | None
    genome_hash: str
    code_hash: str
    active_files: int
    active_functions: int
    lines: int
    complexity: int
    mutations: int
    fitness: float | None
    evaluations: int
    restarts: int
    process: ProcessState
    pid: int | None
    pid_started: float | None
    energy: float
    idle_generations: int
    template: str | None


class GenerationRow(NamedTuple):
    """One closed generation, as ``status`` shows it (generation 0: the founders)."""

    generation: int
    mean: float | None
    max: float | None
    population: int
    births: int
    deaths: int
    min: float | None = None
    sd: float | None = None  # the spread: standard deviation of the active agents' fitness
    tasks: int | None = None  # tasks scored during the generation (None: not recorded)


class GenerationDetail(NamedTuple):
    """What the dashboard keeps of a closed generation beside its row."""

    generation: int
    shares: tuple[tuple[str, float], ...]  # gene, share of the active agents expressing it
    fitness: tuple[tuple[str, float], ...]  # agent, its fitness when the generation closed


class TemplateVersion(NamedTuple):
    """One content of ``agent_template/`` as the store records it."""

    fingerprint: str
    created: float
    genes: dict[str, list[str]]  # evolvable module path -> its function genes
    files: dict[str, str]  # path -> digest, every file of the version
    agents: int  # living agents that run it


class Event(NamedTuple):
    """Something that happened, for the log, the store and the hooks."""

    kind: str
    time: float
    agent: str | None = None
    data: tuple[tuple[str, object], ...] = ()


__all__ = [
    "PROCESS_STATES",
    "STATUSES",
    "AgentRow",
    "AgentUpdate",
    "Event",
    "GenerationRow",
    "ProcessState",
    "ScanOutcome",
    "Status",
    "TemplateVersion",
]
