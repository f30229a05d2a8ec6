"""The built-in selection strategies by name, and how any strategy name is loaded.

Listed once, here: ``evolve.toml`` validation and help text derive from ``BUILTIN``.
Each built-in is named by its ``module:attr`` so that reading the names imports none.
"""

from __future__ import annotations

from evolve_ai.core.selection import Strategy
from evolve_ai.plugins import load_plugin

GROUP = "evolve_ai.selection"  # entry-point group of plug-in strategies

BUILTIN: dict[str, str] = {
    "truncation": "evolve_ai.core.selection.truncation:truncation",
    "tournament": "evolve_ai.core.selection.tournament:tournament_selection",
    "threshold": "evolve_ai.core.selection.threshold:threshold",
    "energy": "evolve_ai.core.selection.energy:energy",
    "none": "evolve_ai.core.selection:none_strategy",
}


def load_strategy(name: str) -> Strategy:
    """A built-in by name, else a plug-in (``module:attr`` or an entry point of GROUP)."""
    strategy: Strategy = load_plugin(BUILTIN.get(name, name), GROUP, "selection strategy")
    return strategy
