"""evolve: an orchestrator for evolutionary multi-agent AI.

Plug-in authors and tests import from here and nothing deeper.
"""

from evolve_ai.core.catalogue import Catalogue, ModuleEntry, build_catalogue
from evolve_ai.core.genome import FileGene, Genome, decode, encode, random_genome
from evolve_ai.core.records import AgentRecord, Event
from evolve_ai.errors import (
    ConfigError,
    EvolveError,
    GenomeError,
    LockHeld,
    TemplateError,
    UnknownAgent,
    WorkspaceError,
)

__all__ = [
    "AgentRecord",
    "Catalogue",
    "ConfigError",
    "Event",
    "EvolveError",
    "FileGene",
    "Genome",
    "GenomeError",
    "LockHeld",
    "ModuleEntry",
    "TemplateError",
    "UnknownAgent",
    "WorkspaceError",
    "build_catalogue",
    "decode",
    "encode",
    "random_genome",
]
