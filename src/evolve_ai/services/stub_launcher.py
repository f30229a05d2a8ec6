"""``StubLauncher``: in-process fake agents driven by a clock you advance.

A working fake, not a mock: each stub agent has real pipes, speaks the protocol
(hello, answers, stop), exits, ignores or obeys signals and reports a usage, all
as its ``Program`` says and when the ``StubClock`` says. Stub agents act whenever
the clock is read, so the supervisor cannot tell them from the fork server's, and
its whole state machine runs in milliseconds. Give the supervisor the stub's clock
with ``blocking=False``; move time with ``advance``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from evolve_ai.services.launcher import Exited, Launched, LaunchError, LaunchSpec, Usage

Answer = Callable[[Any], Any]


class StubClock:
    """A monotonic clock that moves only when told (pass it as the supervisor's clock).

    With ``tick``, every read also moves it on by that much: code that loops until a
    deadline (``Supervisor.shutdown``) then ends, as it would in real time.
    """

    def __init__(self, start: float = 1000.0, tick: float = 0.0) -> None:
        self.now = start
        self.tick = tick
        self._listeners: list[Callable[[], None]] = []

    def __call__(self) -> float:
        self.now += self.tick
        for listener in self._listeners:
            listener()
        return self.now

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` at every read (it must read ``now``, not call the clock)."""
        self._listeners.append(listener)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.now += seconds


@dataclass(frozen=True, slots=True)
class Program:
    """How a stub agent behaves; times are seconds after its start."""

    hello_after: float | None = 0.0  # None: never says hello
    exit_after: float | None = None  # exits on its own then, with ``exit_code``
    exit_code: int = 1
    answer: Answer | None = None  # answers each task with answer(data); None: never answers
    reads_stdin: bool = True  # False: a stuck agent, whose stdin pipe fills up
    garbage: int = 0  # malformed lines written at each step, once it has said hello
    obeys_stop: bool = True  # exits 0 on a "stop" message or EOF on stdin
    obeys_term: bool = True  # dies of SIGTERM (SIGKILL always kills)
    processes: int = 1
    rss: int = 10 << 20
    cpu_per_second: float = 0.0  # CPU seconds it burns per second of its life


@dataclass(slots=True)
class StubProcess:
    """One running stub agent: the far ends of its pipes and what it has done."""

    agent_id: str
    pid: int
    program: Program
    started: float
    stdin: int  # the agent's end: it reads the orchestrator's messages here
    stdout: int  # the agent's end: it writes its lines here
    received: list[dict[str, Any]] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)  # a line not yet complete
    outbox: bytearray = field(default_factory=bytearray)  # what its full stdout did not take
    said_hello: bool = False
    signals: list[int] = field(default_factory=list)


class StubLauncher:
    """A ``Launcher`` whose agents are ``StubProcess``es running ``program(spec)``."""

    def __init__(self, clock: StubClock,
                 program: Program | Callable[[LaunchSpec], Program] = Program()) -> None:
        self.clock = clock
        self.program = program
        self.processes: dict[int, StubProcess] = {}
        self.exits: list[Exited] = []  # every exit so far, oldest first
        self.spawns = 0
        self.refuse: str | None = None  # set to make spawn fail with this message
        self._pending: list[Exited] = []
        self._next_pid = 100_000
        self._wake_read = self._wake_write = -1
        self._stepping = False
        clock.listen(self.step)

    # -- the Launcher protocol ------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._wake_read >= 0

    @property
    def sandbox_status(self) -> str:
        return "rlimits only: stub launcher"

    @property
    def pids_status(self) -> str:
        return "no pids cgroup: stub launcher"

    @property
    def memory_status(self) -> str:
        return "no memory cgroup: stub launcher"

    def start(self) -> None:
        if self._wake_read < 0:
            self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def close(self) -> None:
        for process in list(self.processes.values()):
            self._exit(process, -signal.SIGKILL)
        if self._wake_read >= 0:
            os.close(self._wake_read)
            os.close(self._wake_write)
            self._wake_read = self._wake_write = -1

    def fileno(self) -> int:
        if self._wake_read < 0:
            raise LaunchError("the launcher is not started")
        return self._wake_read

    def spawn(self, spec: LaunchSpec, stderr_fd: int) -> Launched:
        del stderr_fd  # stub agents write nothing on stderr
        if self._wake_read < 0:
            raise LaunchError("the launcher is not started")
        relative = [path for path in (spec.cwd, *spec.writable) if not os.path.isabs(path)]
        if relative:
            raise LaunchError(f"agent {spec.agent_id}: paths must be absolute: {relative[0]}")
        if self.refuse is not None:
            raise LaunchError(self.refuse)
        program = self.program if isinstance(self.program, Program) else self.program(spec)
        stdin_read, stdin_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        stdout_read, stdout_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._next_pid += 1
        self.spawns += 1
        now = self.clock.now
        process = StubProcess(spec.agent_id, self._next_pid, program, now,
                              stdin_read, stdout_write)
        self.processes[process.pid] = process
        return Launched(spec.agent_id, process.pid, now, stdin_write, stdout_read)

    def read_exits(self) -> list[Exited]:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_read, 4096):
                pass
        exits, self._pending = self._pending, []
        return exits

    def signal_group(self, pid: int, sig: int) -> None:
        process = self.processes.get(pid)
        if process is None:
            return
        process.signals.append(sig)
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and process.program.obeys_term):
            self._exit(process, -sig)

    def placement(self) -> dict[str, int]:
        return {}

    def measure(self, pids: Collection[int]) -> dict[int, Usage]:
        return {pid: Usage(p.program.processes, p.program.rss,
                           (self.clock.now - p.started) * p.program.cpu_per_second)
                for pid, p in self.processes.items() if pid in pids}

    # -- driving the fakes ------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock, then let every stub agent act on what it has been sent."""
        self.clock.advance(seconds)
        self.step()

    def step(self) -> None:
        """Every stub agent acts on what it has been sent and on the time (``now``)."""
        if self._stepping:
            return
        self._stepping = True
        try:
            for process in list(self.processes.values()):
                self._run(process)
        finally:
            self._stepping = False

    def by_agent(self, agent_id: str) -> StubProcess | None:
        return next((p for p in self.processes.values() if p.agent_id == agent_id), None)

    def kill(self, agent_id: str, sig: int = signal.SIGKILL, lost: str | None = None) -> None:
        """Something outside kills the agent (it never obeys: it just dies); ``lost``:
        its host went, as a cluster node does."""
        process = self.by_agent(agent_id)
        if process is not None:
            self._exit(process, -sig, lost)

    def _run(self, process: StubProcess) -> None:
        program, age = process.program, self.clock.now - process.started
        self._flush(process)
        if program.hello_after is not None and not process.said_hello \
                and age >= program.hello_after:
            process.said_hello = True
            self._say(process, {"type": "hello", "genome_hash": ""})
        if process.said_hello and program.garbage:
            process.outbox += b"not json\n" * program.garbage
            self._flush(process)
        eof = self._receive(process) if program.reads_stdin else False
        for message in process.received:
            if message.get("type") == "stop" and program.obeys_stop:
                self._exit(process, 0)
                return
            if message.get("type") == "task" and program.answer is not None \
                    and process.said_hello:
                self._say(process, {"type": "answer", "id": message.get("id"),
                                    "value": program.answer(message.get("data"))})
        process.received.clear()
        if eof and program.obeys_stop:
            self._exit(process, 0)
        elif program.exit_after is not None and age >= program.exit_after:
            self._exit(process, program.exit_code)

    def _receive(self, process: StubProcess) -> bool:
        """Read what the orchestrator sent; True at end of file."""
        eof = False
        while True:
            try:
                chunk = os.read(process.stdin, 65536)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            process.buffer += chunk
        *lines, rest = process.buffer.split(b"\n")
        process.buffer = bytearray(rest)
        process.received.extend(json.loads(line) for line in lines if line.strip())
        return eof

    def _say(self, process: StubProcess, message: dict[str, Any]) -> None:
        process.outbox += json.dumps(message).encode() + b"\n"
        self._flush(process)

    def _flush(self, process: StubProcess) -> None:
        """Write what the pipe takes; the rest waits, as a blocked writer would."""
        if not process.outbox:
            return
        try:
            written = os.write(process.stdout, process.outbox)
        except BlockingIOError:
            return
        except BrokenPipeError:  # the orchestrator closed its end: nobody will read it
            process.outbox.clear()
            return
        del process.outbox[:written]

    def _exit(self, process: StubProcess, returncode: int, lost: str | None = None) -> None:
        if self.processes.pop(process.pid, None) is None:
            return
        os.close(process.stdin)
        os.close(process.stdout)
        exited = Exited(process.agent_id, process.pid, returncode, lost)
        self.exits.append(exited)
        self._pending.append(exited)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"!")
