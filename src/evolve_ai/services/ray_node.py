"""One cluster node's share of the population: the body of the node actor.

Runs inside a Ray actor on its node (``ray_launcher`` wraps it with ``ray.remote``), so
it imports no Ray itself. It owns a fork server of its own, started exactly as on one
machine (same sandbox, limits and protocol), and the node's ends of its agents' pipes.
The head talks to it in batches: ``exchange`` takes every byte meant for the node's
agents and returns every byte they said, their closed outputs and their exits since
the last call, so that a pass costs a few round trips per node, not one per message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from evolve_ai.services.forkserver_launcher import ForkServerLauncher
from evolve_ai.services.launcher import LaunchError, LaunchSpec, Usage
from evolve_ai.services.materialise import Bundle, Report, Shelf, relocate, sweep_stale

READ_CAP = 1 << 20  # bytes taken from one agent in one exchange; the rest waits
PENDING_CAP = 1 << 22  # bytes queued here for an agent; the head sends no more
# Outside /tmp: the sandbox hides the node's /tmp from agents only when their own
# directory is not under it.
DEFAULT_ROOT = "/var/tmp/evolve-nodes"
LOG_CAP = 1 << 20  # bytes of an agent's stderr log on a node before it is rolled over
WATCHDOG = 15.0  # seconds without an exchange after which the node ends its agents


class NodeStatus(NamedTuple):
    """Who the node is and how it confines its agents."""

    host: str
    pid: int  # the actor's process
    sandbox: str
    processes: str
    memory: str


class Batch(NamedTuple):
    """What a node's agents did since the last exchange (pids are the node's)."""

    output: dict[int, bytes]
    closed: list[int]  # agents whose stdout reached its end
    exits: list[tuple[int, int]]  # (pid, returncode)
    backlog: dict[int, int]  # bytes queued here for an agent that has not read them yet
    genomes: list[Report]  # of agents that exited, whose genome is not the one laid out


@dataclass(slots=True)
class _Pipes:
    stdin: int | None
    stdout: int | None
    pending: bytearray = field(default_factory=bytearray)


class Node:
    """A fork server on this node and the pipes of the agents it forked."""

    def __init__(self, sandbox: bool = True, watchdog: float = WATCHDOG,
                 root: str | None = None) -> None:
        """``root``: where agents are laid out on this node (no shared file system; ""
        for DEFAULT_ROOT, resolved here, on the node); None: they run in the head's
        directories, shared with this node."""
        self._launcher = ForkServerLauncher(sandbox=sandbox)
        self._launcher.start()  # on the actor's main thread: the server dies with it
        self._pipes: dict[int, _Pipes] = {}
        # One place per actor: two actors on one machine (a loopback cluster, an actor
        # replaced while the old one dies) never share or clear each other's agents.
        self._shelf = None
        if root is not None:
            parent = Path(root or DEFAULT_ROOT)
            sweep_stale(parent)  # places of actors killed without closing
            self._shelf = Shelf(parent / f"node-{os.getpid()}")
        self._agents: dict[int, str] = {}  # pid -> agent id (laid out here)
        # A head cut off from this node (not dead to Ray) must not leave agents running
        # here beside their replacements elsewhere, in the same directories.
        self._heard = time.monotonic()
        self._watchdog = watchdog
        threading.Thread(target=self._watch, name="evolve-node-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while time.monotonic() - self._heard < self._watchdog:
            time.sleep(min(1.0, self._watchdog / 4))
        self._launcher.close()  # the fork server ends, and every agent with it

    def status(self) -> NodeStatus:
        launcher = self._launcher
        return NodeStatus(socket.gethostname(), os.getpid(), launcher.sandbox_status,
                          launcher.pids_status, launcher.memory_status)

    def spawn(self, spec: LaunchSpec, log_path: str, shipped: Bundle | None = None
              ) -> tuple[int, float]:
        """Fork one agent, its stderr appended to ``log_path``; its pid and start time.
        With ``shipped``, its directory is laid out here first (and its log kept here)."""
        if shipped is not None:
            if self._shelf is None:
                raise LaunchError("this node shares the head's files: nothing to lay out")
            directory = self._shelf.place(spec.agent_id, shipped, spec.uid, spec.cwd)
            spec = relocate(spec, directory, self._shelf.commons)
            log_path = str(self._shelf.root / f"{spec.agent_id}.log")
            with contextlib.suppress(OSError):
                if os.stat(log_path).st_size > LOG_CAP:
                    os.replace(log_path, log_path + ".1")
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                         0o644)
            try:
                launched = self._launcher.spawn(spec, fd)
            finally:
                os.close(fd)
        except BaseException:
            if shipped is not None and self._shelf is not None:
                self._shelf.remove(spec.agent_id)
            raise
        self._pipes[launched.pid] = _Pipes(launched.stdin, launched.stdout)
        if shipped is not None:
            self._agents[launched.pid] = spec.agent_id
        return launched.pid, launched.create_time

    def genomes(self) -> list[Report]:
        """Every agent here whose genome is not the one laid out."""
        return [] if self._shelf is None else self._shelf.reports()

    def set_commons(self, files: Mapping[str, bytes]) -> None:
        if self._shelf is not None:
            self._shelf.set_commons(files)

    def exchange(self, output: Mapping[int, bytes], closing: Sequence[int],
                 signals: Sequence[tuple[int, int]],
                 room: Mapping[int, int] | None = None) -> Batch:
        """Deliver the head's bytes and signals; what the agents said and did since,
        at most ``room[pid]`` bytes of an agent (what the head can take; READ_CAP when
        not said): an agent that writes faster than it is read blocks, as on one
        machine, instead of losing what it wrote."""
        self._heard = time.monotonic()
        for pid, sig in signals:
            self._launcher.signal_group(pid, sig)
        for pid, data in output.items():
            pipes = self._pipes.get(pid)
            if pipes is not None and pipes.stdin is not None:
                pipes.pending += data  # the head sends no more than PENDING_CAP allows
        for pid in closing:
            pipes = self._pipes.get(pid)
            if pipes is not None:
                self._flush(pipes)
                _close(pipes, "stdin")
        for pipes in self._pipes.values():
            self._flush(pipes)
        exits = [(e.pid, e.returncode) for e in self._launcher.read_exits()]
        ended_now = {pid for pid, _ in exits}
        said: dict[int, bytes] = {}
        closed: list[int] = []
        for pid, pipes in self._pipes.items():
            # An agent that ended: all it left (a pipe's worth), its pipes close below.
            limit = READ_CAP if room is None or pid in ended_now \
                else min(READ_CAP, room.get(pid, READ_CAP))
            data, ended = _read(pipes, limit)
            if data:
                said[pid] = data
            if ended:
                closed.append(pid)
        genomes: list[Report] = []
        for pid, _ in exits:  # last words were read above
            pipes = self._pipes.pop(pid, None)
            if pipes is not None:
                _close(pipes, "stdin")
                _close(pipes, "stdout")
            agent = self._agents.pop(pid, None)
            if agent is not None and self._shelf is not None:
                last = self._shelf.remove(agent)  # its last genome, its directory gone
                if last is not None:
                    genomes.append(last)
        backlog = {pid: len(p.pending) for pid, p in self._pipes.items() if p.pending}
        return Batch(said, closed, exits, backlog, genomes)

    def measure(self, pids: Collection[int]) -> dict[int, Usage]:
        return self._launcher.measure(pids)

    def close(self) -> None:
        for pipes in self._pipes.values():
            _close(pipes, "stdin")
            _close(pipes, "stdout")
        self._pipes.clear()
        self._launcher.close()
        if self._shelf is not None:  # what agents wrote here is derived data
            shutil.rmtree(self._shelf.root, ignore_errors=True)

    def _flush(self, pipes: _Pipes) -> None:
        if pipes.stdin is None or not pipes.pending:
            return
        try:
            written = os.write(pipes.stdin, pipes.pending)
            del pipes.pending[:written]
        except BlockingIOError:
            pass
        except OSError as error:
            if error.errno not in (errno.EPIPE, errno.EBADF):
                raise
            pipes.pending.clear()
            _close(pipes, "stdin")


def _read(pipes: _Pipes, limit: int) -> tuple[bytes, bool]:
    """What is waiting on an agent's stdout (at most ``limit``), and whether it ended."""
    if pipes.stdout is None:
        return b"", False
    chunks: list[bytes] = []
    taken = 0
    while taken < limit:
        try:
            chunk = os.read(pipes.stdout, min(65536, limit - taken))
        except BlockingIOError:
            break
        except OSError:
            chunk = b""
        if not chunk:
            _close(pipes, "stdout")
            return b"".join(chunks), True
        chunks.append(chunk)
        taken += len(chunk)
    return b"".join(chunks), False


def _close(pipes: _Pipes, which: str) -> None:
    fd = getattr(pipes, which)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        setattr(pipes, which, None)
