"""structlog set-up: every event as a JSON line in ``logs/evolve.jsonl``, some on the console.

The console shows what the verbosity lets through (``-q`` errors only; ``-v`` every
event; else warnings and up, so cron stays quiet and a terminal calm); the file keeps
every event. A live panel may take the console's lines instead (``tap_console``).
structlog is imported on first use, so commands that log nothing start faster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evolve_ai.services.workspace import Cleanup, Workspace

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _Sinks:
    """The last processor: writes the event to the file and, if loud enough, the console."""

    def __init__(self, console_level: int, console_format: str) -> None:
        import structlog

        self.console_level = console_level
        self.console_format = console_format
        self.file: IO[str] | None = None
        self.path: Path | None = None
        self.max_bytes = 0  # roll the file over past this size; 0: never
        self.files = 0  # rolled-over copies kept
        self.written = 0
        self.tap: Callable[[Mapping[str, Any]], None] | None = None  # instead of the console
        self._console = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        self._drop = structlog.DropEvent

    def __call__(self, logger: Any, method: str,
                 event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        level = LEVELS.get(event.get("level", "info"), 20)
        if self.file is not None:
            line = json.dumps(event, default=str, sort_keys=True) + "\n"
            self.file.write(line)
            self.written += len(line)
            if self.max_bytes and self.written > self.max_bytes:
                self.roll_over()
        if level >= self.console_level and self.tap is not None:
            self.tap(event)
        elif level >= self.console_level:
            if self.console_format == "json":
                line = json.dumps(event, default=str, sort_keys=True)
            else:
                line = str(self._console(logger, method, dict(event)))
            print(line, file=sys.stderr, flush=True)
        raise self._drop

    def roll_over(self) -> None:
        """evolve.jsonl -> .1 -> .2 ...; the oldest beyond ``files`` is dropped."""
        assert self.file is not None and self.path is not None
        self.file.close()
        for index in range(self.files, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if index == self.files:
                older.unlink(missing_ok=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    older.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self.file = self.path.open("a", encoding="utf-8", buffering=1)
        self.written = 0


_settings: tuple[int, str] = (0, "console")
_sinks: _Sinks | None = None


def configure(verbosity: int, console_format: str) -> None:
    """verbosity: -1 quiet, 0 normal, 1 verbose. Takes effect at the first log call."""
    global _settings, _sinks
    _settings = (verbosity, console_format)
    if _sinks is not None and _sinks.file is not None:
        _sinks.file.close()  # the file, if any, is attached again by whoever wants it
    _sinks = None


def _ensure() -> _Sinks:
    global _sinks
    if _sinks is not None:
        return _sinks
    import structlog

    verbosity, console_format = _settings
    if verbosity < 0:
        level = logging.ERROR
    elif verbosity > 0:
        level = logging.DEBUG
    else:  # per-event lines only with -v: on a terminal the life cycle has its panel
        level = logging.WARNING
    _sinks = _Sinks(level, console_format)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _sinks,
        ],
        # Every event reaches the sinks: the file keeps all, the console filters.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    return _sinks


def tap_console(tap: Callable[[Mapping[str, Any]], None] | None) -> None:
    """Hand what the console would print to ``tap`` instead (None: print again)."""
    _ensure().tap = tap


def attach_file(path: Path, max_bytes: int = 0, files: int = 1) -> None:
    """Start appending every event to ``path`` (line-buffered, so a crash loses no line);
    past ``max_bytes`` it rolls over, ``files`` old copies kept."""
    sinks = _ensure()
    if sinks.file is not None:
        sinks.file.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    sinks.file = path.open("a", encoding="utf-8", buffering=1)
    sinks.path, sinks.max_bytes, sinks.files = path, max_bytes, max(1, files)
    sinks.written = sinks.file.tell()


def report_cleanup(cleanup: Cleanup, workspace: Workspace) -> None:
    """Say what ``clean_debris`` did: deletions are routine, unlisted agents are not."""
    log = get_logger()
    if cleanup.removed:
        log.info("debris_removed", entries=cleanup.removed)
    if cleanup.kept:
        log.warning("unlisted_agents_kept", count=len(cleanup.kept), agents=cleanup.kept[:10],
                    where=str(workspace.trash_dir))


def get_logger(**context: Any) -> Any:
    _ensure()
    import structlog

    return structlog.get_logger().bind(**context)
