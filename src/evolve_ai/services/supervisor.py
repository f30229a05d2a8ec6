"""The supervisor: agent processes, their pipes, stops, crashes and restarts.

One selector multiplexes every agent's stdout, the launcher's exit reports and a
wake-up pipe (signals, pool completions): no thread per agent. Process state per
agent: stopped -> starting -> running -> (stopping) -> stopped, backoff or exited.
Policy (backoff delays, when to disable) is ``core.backoff``'s; processes are the
launcher's (a ``Launcher``); time is the ``clock``'s, so tests drive both.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from evolve_ai._wire import SANDBOXED
from evolve_ai.core.backoff import restart_delay, should_disable
from evolve_ai.core.records import Event, ProcessState
from evolve_ai.services.launcher import Exited, Launcher, LaunchError, LaunchSpec
from evolve_ai.services.protocol import LineReader, encode

MAX_PENDING_OUTPUT = 1 << 20  # bytes queued for an agent that is not reading its stdin

MessageHandler = Callable[[str, dict[str, Any]], None]
Clock = Callable[[], float]


class ProcessInfo(NamedTuple):
    """What the store records of an agent's process."""

    state: ProcessState
    pid: int | None
    create_time: float | None
    restarts: int


class Sandbox(NamedTuple):
    """How agents are confined, as the launcher reported it when it started."""

    status: str  # "namespaces", or "rlimits only: <reason>"
    processes: str  # "pids cgroup", or "no pids cgroup: <reason>"
    memory: str  # "memory cgroup", or "no memory cgroup: <reason>"

    @property
    def degraded(self) -> bool:
        return self.status != SANDBOXED


@dataclass(slots=True)
class AgentProcess:
    """What the supervisor knows of one agent's process."""

    agent_id: str
    state: ProcessState = "stopped"
    pid: int | None = None
    create_time: float | None = None
    stdin: int | None = None
    reader: LineReader | None = None
    output: bytearray = field(default_factory=bytearray)
    started_at: float = 0.0
    hello_at: float | None = None
    crashes: int = 0  # consecutive
    restarts: int = 0
    backoff_until: float = 0.0
    stopping: str | None = None  # why a stop was asked: restart, turn, shutdown, quarantined...
    term_at: float = 0.0
    kill_at: float = 0.0
    read_malformed: int = 0  # what the current reader had counted at the last read
    malformed: int = 0  # malformed lines not yet reported (one event a pass at most)
    dirty: bool = True  # to be saved


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    stop_timeout: float
    hello_timeout: float
    stable_after: float
    max_restarts: int
    backoff_initial: float
    backoff_max: float
    memory_bytes: int
    processes: int
    cpu_seconds: float = float("inf")


class Supervisor:
    def __init__(self, launcher: Launcher, settings: SupervisorSettings,
                 on_message: MessageHandler, clock: Clock = time.monotonic,
                 *, blocking: bool = True) -> None:
        self.launcher = launcher
        self.settings = settings
        self.on_message = on_message
        self.clock = clock
        # False for a clock that moves only when a test moves it: waiting would never end.
        self._blocks = blocking
        self._agents: dict[str, AgentProcess] = {}
        self._hellos: list[float] = []  # launch-to-hello seconds, since taken
        self._events: list[Event] = []
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_read, selectors.EVENT_READ, ("wake", ""))
        self._launcher_registered = False
        self._by_pid: dict[int, str] = {}

    # -- public -------------------------------------------------------------

    @property
    def wake_fd(self) -> int:
        """Write a byte here (from a signal handler or a thread) to end a wait early."""
        return self._wake_write

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"!")

    def restore(self, agent_id: str, restarts: int) -> None:
        """Take up an agent known from the store (resume): no process, its restart count."""
        proc = self._get(agent_id)
        proc.restarts, proc.dirty = restarts, False

    def forget(self, agent_id: str) -> None:
        """Drop a dead agent's record; only once its process is gone."""
        proc = self._agents.get(agent_id)
        if proc is not None and proc.pid is None:
            del self._agents[agent_id]

    def info(self, agent_id: str) -> ProcessInfo | None:
        proc = self._agents.get(agent_id)
        if proc is None:
            return None
        return ProcessInfo(proc.state, proc.pid, proc.create_time, proc.restarts)

    def has_process(self, agent_id: str) -> bool:
        """Whether the agent has a live process (starting, running or being stopped)."""
        proc = self._agents.get(agent_id)
        return proc is not None and proc.pid is not None

    def any_starting(self) -> bool:
        return any(p.state == "starting" for p in self._agents.values())

    def take_changed(self) -> set[str]:
        """Agents whose process record changed since the last call (to be saved)."""
        changed = {a for a, p in self._agents.items() if p.dirty}
        for agent_id in changed:
            self._agents[agent_id].dirty = False
        return changed

    def take_hellos(self) -> list[float]:
        """Seconds from launch to hello of the agents that said it since the last call."""
        hellos, self._hellos = self._hellos, []
        return hellos

    def states(self, agent_ids: Iterable[str]) -> dict[str, int]:
        """How many of ``agent_ids`` are in each process state (no process: stopped)."""
        counts: dict[str, int] = {}
        for agent_id in agent_ids:
            proc = self._agents.get(agent_id)
            state = "stopped" if proc is None else proc.state
            counts[state] = counts.get(state, 0) + 1
        return counts

    def sandbox(self) -> Sandbox | None:
        """How agents are confined; None until the launcher has started."""
        if not self.launcher.alive:
            return None
        return Sandbox(self.launcher.sandbox_status, self.launcher.pids_status,
                       self.launcher.memory_status)

    def _get(self, agent_id: str) -> AgentProcess:
        proc = self._agents.get(agent_id)
        if proc is None:
            proc = self._agents[agent_id] = AgentProcess(agent_id)
        return proc

    def start(self, spec: LaunchSpec, stderr_fd: int, now: float) -> bool:
        """Launch an agent; False (and a crash) if the launcher refuses."""
        if not self._launcher_registered:
            self.launcher.start()
            self._selector.register(self.launcher.fileno(), selectors.EVENT_READ, ("exits", ""))
            self._launcher_registered = True
        proc = self._get(spec.agent_id)
        try:
            launched = self.launcher.spawn(spec, stderr_fd)
        except LaunchError as exc:
            self._event("crashed", proc, reason=f"launch failed: {exc}", level="warning")
            self._after_crash(proc, now)
            return False
        proc.state, proc.pid, proc.create_time = "starting", launched.pid, launched.create_time
        proc.stdin, proc.reader = launched.stdin, LineReader(launched.stdout)
        proc.output.clear()
        proc.started_at, proc.hello_at, proc.stopping = now, None, None
        proc.read_malformed = 0
        proc.dirty = True
        self._by_pid[launched.pid] = spec.agent_id
        self._selector.register(launched.stdout, selectors.EVENT_READ, ("out", spec.agent_id))
        self._event("started", proc, pid=launched.pid, level="debug")
        return True

    def stop(self, agent_id: str, reason: str, now: float) -> None:
        """Polite stop now, SIGTERM to the group halfway through stop_timeout, SIGKILL at it."""
        proc = self._agents.get(agent_id)
        if proc is None or proc.pid is None or proc.stopping is not None:
            if proc is not None and proc.state == "backoff":
                proc.state, proc.dirty = "stopped", True
            return
        proc.stopping = reason
        self.send(agent_id, {"type": "stop"})
        self._flush(proc)
        self._close_stdin(proc)
        proc.term_at = now + self.settings.stop_timeout / 2
        proc.kill_at = now + self.settings.stop_timeout

    def send(self, agent_id: str, *messages: dict[str, Any]) -> bool:
        """Queue messages for an agent and write what its pipe takes (one write for all)."""
        proc = self._agents.get(agent_id)
        if proc is None or proc.stdin is None:
            return False
        if len(proc.output) > MAX_PENDING_OUTPUT:
            return False
        for message in messages:
            proc.output += encode(message)
        self._flush(proc)
        return True

    def running(self) -> list[str]:
        """Agents that said hello and are not being stopped."""
        return [a for a, p in self._agents.items()
                if p.state == "running" and p.stopping is None]

    def alive(self) -> list[str]:
        return [a for a, p in self._agents.items() if p.pid is not None]

    def wait(self, timeout: float) -> None:
        """Serve I/O and timers for up to ``timeout`` seconds (returns early when woken).

        Not ``blocking`` (a stub clock): serve what is ready once, and return.
        """
        deadline = self.clock() + max(0.0, timeout)
        while True:
            now = self.clock()
            self.tick(now)
            remaining = max(0.0, deadline - now)
            timeout = min(remaining, self._next_timer(now) - now, 0.5) if self._blocks else 0
            woken = self._serve(self._selector.select(timeout))
            if woken or not self._blocks or self.clock() >= deadline:
                return

    def _serve(self, ready: list[tuple[selectors.SelectorKey, int]]) -> bool:
        """Act on ready fds; True if the wake-up pipe was among them."""
        woken = False
        for key, _ in ready:
            kind, agent_id = key.data
            if kind == "out":
                self._read(agent_id, self.clock())
            elif kind == "in":
                self._flush(self._agents[agent_id])
            elif kind == "exits":
                self._reap(self.launcher.read_exits(), self.clock())
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 4096)
                woken = True
        return woken

    def tick(self, now: float) -> None:
        """Timers: stop escalation, hello deadlines."""
        for proc in list(self._agents.values()):
            if proc.pid is None:
                continue
            if proc.stopping is not None:
                if now >= proc.kill_at:
                    self._signal_group(proc, signal.SIGKILL)
                    proc.kill_at = now + 1.0  # in case the report is slow: repeat, never spin
                elif now >= proc.term_at and proc.term_at:
                    self._signal_group(proc, signal.SIGTERM)
                    proc.term_at = 0.0
            elif proc.state == "starting" and now - proc.started_at > self.settings.hello_timeout:
                self._event("hung", proc, reason="no hello", level="warning")
                self.kill(proc.agent_id, "no hello", now)
            elif (proc.state == "running" and proc.crashes
                  and now - proc.started_at >= self.settings.stable_after):
                proc.crashes, proc.dirty = 0, True

    def kill(self, agent_id: str, reason: str, now: float) -> None:
        """End an agent at once (a crash unless already stopping)."""
        proc = self._agents.get(agent_id)
        if proc is None or proc.pid is None:
            return
        if proc.stopping is None:
            proc.stopping = f"killed: {reason}"
        proc.kill_at = now
        self._signal_group(proc, signal.SIGKILL)
        proc.kill_at = now + 1.0

    def ready_to_restart(self, agent_id: str, now: float) -> bool:
        """May this agent be started now? Not while it runs, waits out a backoff, or is spent."""
        proc = self._agents.get(agent_id)
        if proc is None:
            return True
        if proc.pid is not None or proc.state == "exited":
            return False
        return proc.state != "backoff" or now >= proc.backoff_until

    def monitor(self, now: float) -> None:
        """Once a pass: report malformed output (one event per agent, with its count),
        measure every live agent's process group, kill those over their limits."""
        for proc in self._agents.values():
            if proc.malformed:  # a trickle of garbage costs one event a pass, not one a line
                self._event("malformed", proc, count=proc.malformed, level="debug")
                proc.malformed = 0
        usage = self.launcher.measure(self._by_pid.keys())
        for pid, agent_id in list(self._by_pid.items()):
            proc = self._agents[agent_id]
            used = usage.get(pid)
            if proc.stopping is not None or used is None:
                continue
            if used.processes > self.settings.processes:
                self._event("limit", proc, what="processes", value=used.processes,
                            level="warning")
                self.kill(agent_id, f"{used.processes} processes, over the limit", now)
            elif used.rss is not None and used.rss > self.settings.memory_bytes:
                self._event("limit", proc, what="memory", value=used.rss, level="warning")
                self.kill(agent_id, f"resident memory {used.rss} bytes, over the limit", now)
            elif used.cpu is not None and used.cpu > self.settings.cpu_seconds:
                self._event("limit", proc, what="cpu", value=round(used.cpu, 2),
                            level="warning")
                self.kill(agent_id, f"{used.cpu:.1f} CPU seconds, over the limit", now)

    def shutdown(self, now: float, timeout: float) -> None:
        """Stop every agent and wait (at most ``timeout``) until all are gone."""
        for agent_id in self.alive():
            self.stop(agent_id, "shutdown", now)
        deadline = now + timeout + 1.0
        while self.alive() and self.clock() < deadline:
            before = self.clock()
            self.wait(0.05)
            if not self._blocks and self.clock() == before:
                break  # a stub clock that nobody moves: nothing more will happen
        for agent_id in self.alive():  # the launcher is gone or slow: kill what is left
            proc = self._agents[agent_id]
            self._signal_group(proc, signal.SIGKILL)
            self._forget(proc)

    def close(self) -> None:
        """Close the launcher (its agents die with it) and every fd still held."""
        for proc in self._agents.values():
            self._forget(proc)
        self.launcher.close()
        self._selector.close()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def drain_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # -- internals ------------------------------------------------------------

    def _next_timer(self, now: float) -> float:
        soonest = now + 0.5
        for proc in self._agents.values():
            if proc.stopping is not None and proc.pid is not None:
                soonest = min(soonest, proc.term_at or proc.kill_at, proc.kill_at)
        return max(now, soonest)

    def _read(self, agent_id: str, now: float) -> None:
        proc = self._agents[agent_id]
        reader = proc.reader
        if reader is None:
            return
        for message in reader.read():
            if message["type"] == "hello" and proc.state == "starting":
                proc.state, proc.hello_at, proc.dirty = "running", now, True
                self._hellos.append(now - proc.started_at)
            elif proc.state == "running":
                self.on_message(agent_id, message)
        proc.malformed += reader.malformed - proc.read_malformed
        proc.read_malformed = reader.malformed
        if reader.eof:
            self._close_stdout(proc)

    def _reap(self, exits: Iterable[Exited], now: float) -> None:
        for exited in exits:
            agent_id = self._by_pid.get(exited.pid)
            if agent_id is None:
                continue
            proc = self._agents[agent_id]
            if proc.reader is not None:
                self._read(agent_id, now)  # last words
            stopping = proc.stopping
            self._forget(proc)
            if exited.lost is not None and (stopping is None or stopping.startswith("killed")):
                # Its node died under it: started again at once, no crash counted (a
                # flapping cluster must not disable agents that did nothing wrong).
                proc.state = "stopped"
                self._event("stopped", proc, reason=exited.lost, returncode=exited.returncode,
                            level="warning")
                continue
            if stopping is not None and not stopping.startswith("killed"):
                proc.state = "stopped"
                self._event("stopped", proc, reason=stopping, returncode=exited.returncode,
                            level="debug")
                continue
            self._event("crashed", proc, returncode=exited.returncode,
                        ran=round(now - proc.started_at, 3),
                        reason=stopping or "exited on its own", level="warning")
            self._after_crash(proc, now)

    def _after_crash(self, proc: AgentProcess, now: float) -> None:
        if proc.hello_at is not None and now - proc.started_at >= self.settings.stable_after:
            proc.crashes = 0
        proc.crashes += 1
        proc.dirty = True
        if should_disable(proc.crashes, self.settings.max_restarts):
            proc.state = "exited"
            self._event("disabled", proc,
                        reason=f"crashed {proc.crashes} times in a row", level="warning")
            return
        delay = restart_delay(proc.crashes, self.settings.backoff_initial,
                              self.settings.backoff_max)
        proc.state, proc.backoff_until = "backoff", now + delay
        proc.restarts += 1
        self._event("restarted", proc, delay=delay, crashes=proc.crashes, level="info")

    def _forget(self, proc: AgentProcess) -> None:
        if proc.pid is not None:
            self._by_pid.pop(proc.pid, None)
        self._close_stdout(proc)
        self._close_stdin(proc)
        proc.pid = proc.create_time = None
        proc.stopping = None
        proc.dirty = True

    def _flush(self, proc: AgentProcess) -> None:
        if proc.stdin is None or not proc.output:
            return
        try:
            written = os.write(proc.stdin, proc.output)
            del proc.output[:written]
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                proc.output.clear()
                self._close_stdin(proc)
                return
            raise
        self._watch_writes(proc, bool(proc.output))

    def _watch_writes(self, proc: AgentProcess, want: bool) -> None:
        if proc.stdin is None:
            return
        registered = proc.stdin in self._selector.get_map()
        if want and not registered:
            self._selector.register(proc.stdin, selectors.EVENT_WRITE, ("in", proc.agent_id))
        elif not want and registered:
            self._selector.unregister(proc.stdin)

    def _close_stdin(self, proc: AgentProcess) -> None:
        if proc.stdin is None:
            return
        self._watch_writes(proc, False)
        with contextlib.suppress(OSError):
            os.close(proc.stdin)
        proc.stdin = None

    def _close_stdout(self, proc: AgentProcess) -> None:
        if proc.reader is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(proc.reader.fd)
        with contextlib.suppress(OSError):
            os.close(proc.reader.fd)
        proc.reader = None

    def _signal_group(self, proc: AgentProcess, sig: int) -> None:
        if proc.pid is not None:
            self.launcher.signal_group(proc.pid, sig)

    def _event(self, kind: str, proc: AgentProcess, **data: Any) -> None:
        # Events carry wall-clock time, for people; the clock is monotonic.
        self._events.append(Event(kind=kind, time=time.time(), agent=proc.agent_id,
                                  data=tuple(data.items())))
