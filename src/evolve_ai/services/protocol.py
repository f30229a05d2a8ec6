"""The agent protocol on the orchestrator's side: bounded line reading, message encoding.

An agent controls every byte it writes, so reading is bounded everywhere: a
line longer than MAX_LINE is dropped (and counted) without ever being held
in memory whole, and each read takes at most READ_BUDGET bytes so that one
flooding agent cannot starve the others.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 64 * 1024
READ_BUDGET = 256 * 1024


@dataclass(slots=True)
class LineReader:
    """Splits a non-blocking fd's bytes into JSON messages; counts what it must ignore."""

    fd: int
    malformed: int = 0
    eof: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _skipping: bool = False

    def read(self) -> list[dict[str, Any]]:
        """Messages that arrived since the last call (never blocks)."""
        messages: list[dict[str, Any]] = []
        budget = READ_BUDGET
        while budget > 0:
            try:
                chunk = os.read(self.fd, min(budget, 65536))
            except BlockingIOError:
                break
            except OSError:
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            budget -= len(chunk)
            self._feed(chunk, messages)
        return messages

    def _feed(self, chunk: bytes, messages: list[dict[str, Any]]) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not self._skipping:
                    self._buffer += chunk[start:]
                    if len(self._buffer) > MAX_LINE:
                        self._buffer.clear()
                        self._skipping = True
                        self.malformed += 1
                return
            if self._skipping:
                self._skipping = False
            else:
                self._buffer += chunk[start:end]
                self._parse(bytes(self._buffer), messages)
            self._buffer.clear()
            start = end + 1

    def _parse(self, line: bytes, messages: list[dict[str, Any]]) -> None:
        if len(line) > MAX_LINE:
            self.malformed += 1
            return
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            self.malformed += 1
            return
        if isinstance(message, dict) and isinstance(message.get("type"), str):
            messages.append(message)
        else:
            self.malformed += 1


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
