"""evolve: an orchestrator for evolutionary multi-agent AI.

Plug-in authors and tests import from here and nothing deeper. Names are
loaded on first use, so that quick commands (``evolve status``) do not pay
for modules they never touch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AgentRow": "evolve_ai.core.records",
    "Event": "evolve_ai.core.records",
    "GenerationRow": "evolve_ai.core.records",
    "Catalogue": "evolve_ai.core.catalogue",
    "ModuleEntry": "evolve_ai.core.catalogue",
    "build_catalogue": "evolve_ai.core.catalogue",
    "FileGene": "evolve_ai.core.genome",
    "Genome": "evolve_ai.core.genome",
    "decode": "evolve_ai.core.genome",
    "encode": "evolve_ai.core.genome",
    "random_genome": "evolve_ai.core.genome",
    "Decision": "evolve_ai.core.selection",
    "Individual": "evolve_ai.core.selection",
    "Params": "evolve_ai.core.selection",
    "Strategy": "evolve_ai.core.selection",
    "Launcher": "evolve_ai.services.launcher",
    "LaunchSpec": "evolve_ai.services.launcher",
    "Program": "evolve_ai.services.stub_launcher",
    "StubClock": "evolve_ai.services.stub_launcher",
    "StubLauncher": "evolve_ai.services.stub_launcher",
    "Environment": "evolve_ai.environments",
    "Settings": "evolve_ai.environments",
    "Task": "evolve_ai.environments",
    "ConfigError": "evolve_ai.errors",
    "EvolveError": "evolve_ai.errors",
    "GenomeError": "evolve_ai.errors",
    "LockHeld": "evolve_ai.errors",
    "TemplateError": "evolve_ai.errors",
    "UnknownAgent": "evolve_ai.errors",
    "WorkspaceError": "evolve_ai.errors",
}

__all__ = [
    "AgentRow",
    "Catalogue",
    "ConfigError",
    "Decision",
    "Environment",
    "Event",
    "EvolveError",
    "FileGene",
    "GenerationRow",
    "Genome",
    "GenomeError",
    "Individual",
    "LaunchSpec",
    "Launcher",
    "LockHeld",
    "ModuleEntry",
    "Params",
    "Program",
    "Settings",
    "Strategy",
    "StubClock",
    "StubLauncher",
    "Task",
    "TemplateError",
    "UnknownAgent",
    "WorkspaceError",
    "build_catalogue",
    "decode",
    "encode",
    "random_genome",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evolve_ai' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
