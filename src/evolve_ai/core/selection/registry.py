"""Name -> strategy: the built-ins, then plug-ins (``module:attr`` or entry points)."""

from __future__ import annotations

from evolve_ai.core.selection import Strategy, none_strategy
from evolve_ai.core.selection.energy import energy
from evolve_ai.core.selection.threshold import threshold
from evolve_ai.core.selection.tournament import tournament_selection
from evolve_ai.core.selection.truncation import truncation

BUILTIN: dict[str, Strategy] = {
    "truncation": truncation,
    "tournament": tournament_selection,
    "threshold": threshold,
    "energy": energy,
    "none": none_strategy,
}
