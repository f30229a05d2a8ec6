"""The notifier: every event to the log and to the configured hooks.

Hooks run on one background thread, never on the loop. A hook that raises is
counted, and logged once a generation with its count and last error; one that runs
past ``timeout`` is abandoned (its thread left to
finish on its own, a fresh one takes over) and logged. A full queue drops
events for hooks, never blocks the loop; the log and the database have them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from evolve_ai._linux import name_thread
from evolve_ai.core.records import Event
from evolve_ai.plugins import load_plugin
from evolve_ai.services import logs

Hook = Callable[[dict[str, Any]], object]
QUEUE_SIZE = 10_000


def event_dict(event: Event) -> dict[str, Any]:
    return {"event": event.kind, "time": event.time, "agent": event.agent, **dict(event.data)}


class Notifier:
    def __init__(self, hook_names: Sequence[str], timeout: float) -> None:
        self.hooks: list[tuple[str, Hook]] = [
            (name, load_plugin(name, "evolve_ai.hooks", "hook")) for name in hook_names
        ]
        self.timeout = timeout
        self.log = logs.get_logger()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._dropped = 0
        self._busy_since: float | None = None
        self._busy_hook = ""
        self._failures: dict[str, tuple[int, str]] = {}  # hook -> failures, last error
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if self.hooks:
            self._start_thread()

    def publish(self, events: Sequence[Event]) -> None:
        """Log every event; queue it for the hooks."""
        for event in events:
            data = dict(event.data)
            level = data.pop("level", "info")
            # "time" is when it happened; structlog's "timestamp" is when it was logged.
            getattr(self.log, str(level))(event.kind, agent=event.agent,
                                          time=round(event.time, 6), **data)
        if not self.hooks:
            return
        self._check_stuck()
        for event in events:
            try:
                self._queue.put_nowait(event_dict(event))
            except queue.Full:
                self._dropped += 1
        if self._dropped:
            self.log.warning("hook_events_dropped", count=self._dropped)
            self._dropped = 0
        if any(event.kind == "generation" for event in events):
            self.report_failures()

    def report_failures(self) -> None:
        """One ``hook_failed`` line per failing hook, with a count, since the last one
        (once a generation, and at the end): not one per event."""
        with self._lock:
            failures, self._failures = self._failures, {}
        for name, (count, error) in failures.items():
            self.log.error("hook_failed", hook=name, count=count, last_error=error)

    def close(self, wait: float = 1.0) -> None:
        if self._thread is None:
            return
        self.report_failures()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            return
        self._thread.join(wait)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, args=(self._queue,),
                                        name="evolve-hooks", daemon=True)
        self._thread.start()

    def _check_stuck(self) -> None:
        """A hook past its timeout: abandon its thread and carry on with a new one."""
        with self._lock:
            since, name = self._busy_since, self._busy_hook
        if since is None or time.monotonic() - since <= self.timeout:
            return
        self.log.error("hook_timeout", hook=name, seconds=self.timeout)
        old = self._queue
        self._queue = queue.Queue(QUEUE_SIZE)
        with self._lock:
            self._busy_since = None
        old.put_nowait(None) if not old.full() else None
        self._start_thread()

    def _run(self, source: queue.Queue[dict[str, Any] | None]) -> None:
        name_thread()
        while True:
            item = source.get()
            if item is None or source is not self._queue:
                return
            for name, hook in self.hooks:
                with self._lock:
                    self._busy_since, self._busy_hook = time.monotonic(), name
                try:
                    hook(dict(item))
                except Exception as exc:  # a hook may fail in any way; the loop goes on
                    with self._lock:
                        count, _ = self._failures.get(name, (0, ""))
                        self._failures[name] = (count + 1, f"{type(exc).__name__}: {exc}")
                finally:
                    with self._lock:
                        self._busy_since = None
                if source is not self._queue:
                    return  # abandoned while this hook ran: a new thread owns the events
