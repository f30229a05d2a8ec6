"""Load a plug-in named ``module:attr`` or by entry point (environments, selection, hooks)."""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from evolve_ai.errors import ConfigError


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
