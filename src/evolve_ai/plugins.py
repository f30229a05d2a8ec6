"""Load a plug-in named ``module:attr`` or by entry point (environments, selection, hooks)."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

from evolve_ai.errors import ConfigError


def search_in(directory: Path) -> None:
    """Let ``module:attr`` plug-ins be found in ``directory`` (the workspace's), after
    everything else on the path: a file there never shadows an installed module."""
    entry = str(directory.resolve())
    if entry not in sys.path:
        sys.path.append(entry)
        importlib.invalidate_caches()


def load_plugin(reference: str, group: str, what: str) -> Any:
    """The object named by ``reference``; ConfigError with one line if it cannot be loaded."""
    try:
        if ":" in reference:
            module_name, _, attribute = reference.partition(":")
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
            return target
        for entry in importlib.metadata.entry_points(group=group):
            if entry.name == reference:
                return entry.load()
    except Exception as exc:  # a plug-in may fail in any way while importing
        raise ConfigError(f"{what} {reference!r} cannot be loaded: "
                          f"{type(exc).__name__}: {exc}") from None
    raise ConfigError(f"{what} {reference!r} is neither module:attr nor an entry point "
                      f"of {group}")
