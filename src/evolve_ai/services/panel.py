"""The life cycle's live panel on a terminal: one summary that updates in place.

A person at a terminal wants the population at a glance, not the event stream: the
panel shows the generation and pass, agents by status, fitness with its trend, the
last generation's births and deaths, the pass time and the last few warnings. Per-agent
events stay in the JSON log (and reach the console with ``-v``, where no panel is
shown). Drawn with ``rich`` on stderr, so stdout stays clean for scripts.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evolve_ai.core.records import STATUSES, GenerationRow

TREND = 24  # generations in the fitness trend
WARNINGS = 4  # the last few warnings shown
BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True, slots=True)
class PassView:
    """What the panel shows of one pass."""

    passes: int
    seconds: float
    generation: int
    statuses: Mapping[str, int]
    running: int
    fitness: Sequence[float]  # the active agents' current fitness


def sparkline(values: Sequence[float]) -> str:
    """One bar per value, scaled between the smallest and the largest."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    return "".join(BARS[0 if span == 0 else min(len(BARS) - 1,
                                                int((v - low) / span * len(BARS)))]
                   for v in values)


class Panel:
    """``start``, then ``show`` after each pass and ``closed`` after each generation,
    ``warn`` for each warning the console would have printed (from any thread: the
    webhook senders', the hooks', the backup's); ``stop`` at the end."""

    def __init__(self, root: str, interval: float) -> None:
        from rich.console import Console

        self.root = root
        self.interval = interval
        self.console = Console(stderr=True)
        self.started = time.time()
        self.view: PassView | None = None
        self.generations: deque[GenerationRow] = deque(maxlen=TREND)
        self.warnings: deque[str] = deque(maxlen=WARNINGS)
        self.stopping = ""
        self._live: Any = None
        self._lock = threading.Lock()  # warn() comes from other threads than the loop's

    def start(self) -> None:
        from rich.live import Live

        # The panel is rebuilt only when something changed (show, warn), not polled.
        self._live = Live(self._render(), console=self.console, auto_refresh=False,
                          redirect_stdout=False, redirect_stderr=False, transient=False)
        self._live.start()

    def show(self, view: PassView) -> None:
        with self._lock:
            self.view = view
        self._refresh()

    def closed(self, generation: GenerationRow) -> None:
        with self._lock:
            self.generations.append(generation)

    def warn(self, event: Mapping[str, Any]) -> None:
        """A warning or an error, one line: its time, its name and its main fields."""
        details = " ".join(f"{k}={v}" for k, v in event.items()
                           if k not in ("event", "level", "timestamp", "command", "time"))
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            self.warnings.append(f"{stamp} {event.get('level', '')} {event.get('event', '')} "
                                 f"{details}"[:200])
        self._refresh()

    def stop(self, reason: str = "") -> None:
        if self._live is None:
            return
        self.stopping = reason
        self._refresh()
        with self._lock:
            self._live.stop()
            self._live = None

    def _refresh(self) -> None:
        with self._lock:  # one drawing at a time, of a consistent state
            if self._live is not None:
                self._live.update(self._render(), refresh=True)

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        up = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.started))
        table.add_row("evolve", f"{self.root}  (up {up})")
        view = self.view
        if view is None:
            table.add_row("", "starting: the first pass scans and launches every agent")
        else:
            table.add_row("generation", f"{view.generation}   pass {view.passes} "
                                        f"({view.seconds:.2f} s; every {self.interval:g} s)")
            # The dead are not counted here: the life cycle forgets them once buried;
            # the last generation's deaths are shown below, the total by `evolve status`.
            counts = "  ".join(f"{status} {view.statuses.get(status, 0)}"
                               for status in STATUSES if status != "dead")
            table.add_row("agents", f"{counts}   running {view.running}")
            if view.fitness:
                mean = sum(view.fitness) / len(view.fitness)
                table.add_row("fitness", f"mean {mean:.4f}  max {max(view.fitness):.4f}  "
                                         f"min {min(view.fitness):.4f}")
        means = [g.mean for g in self.generations if g.mean is not None]
        if means:
            table.add_row("trend", f"{sparkline(means)}  mean fitness, last {len(means)} "
                                   "generations")
        if self.generations:
            last = self.generations[-1]
            table.add_row("last gen.", f"{last.generation}: {last.births} born, "
                                       f"{last.deaths} died")
        for index, line in enumerate(self.warnings):
            table.add_row("warnings" if index == 0 else "", Text(line, style="yellow"))
        table.add_row("", Text(f"stopping: {self.stopping}" if self.stopping else
                               "Ctrl-C stops it (agents stopped, everything saved)",
                               style="dim"))
        return table
