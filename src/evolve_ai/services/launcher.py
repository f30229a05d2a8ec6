"""Launch agent processes fast, sandboxed, and tied to the orchestrator's life.

``Launcher`` drives a fork server (``evolve_ai.forkserver``): a helper interpreter
that has already imported what agents import, and forks one child per agent. The
child sets up its sandbox and runs ``agent.main`` in-process with the observable
result of ``python -m agent.main`` (DESIGN §6). The orchestrator never imports or
runs agent code itself.

Sandbox (``sandbox_status`` says which one is in force):

- ``"namespaces"``: the fork server lives in its own network namespace (no interface
  up: no network) and mount namespace where the whole tree is read-only; each agent
  gets its own mount namespace in which only ``writable`` is writable, minus
  ``readonly_within``. Agents hold no capabilities, cannot regain any
  (no_new_privs), and are not dumpable, so one cannot reach another's directory
  through ``/proc/<pid>/root``.
- ``"rlimits only: <reason>"``: the kernel or our privileges refused a step (or
  ``sandbox=False``): agents still get their rlimits, and without capabilities when
  the sandbox was asked for.

Ownership of fds: ``spawn`` creates the agent's stdin and stdout pipes; the
orchestrator's ends are returned in ``Launched`` and belong to the caller, who
closes them. The stderr fd stays the caller's too: the launcher sends a copy.

Not thread-safe in the sense that matters: the fork server dies with the *thread*
that started it (PR_SET_PDEATHSIG), so call ``start`` from the main thread or one
that lives as long as the launcher. The methods themselves hold a lock.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import psutil

from evolve_ai.errors import EvolveError

# What the default agent template imports (agent_template/src/agent/*.py), plus what a
# child needs to run it: imported once in the fork server, inherited by every fork.
DEFAULT_PRELOAD: tuple[str, ...] = (
    "collections", "collections.abc", "dataclasses", "fractions", "functools", "hashlib",
    "io", "itertools", "json", "math", "msgpack", "os", "pathlib", "random", "runpy",
    "sys", "tempfile", "traceback", "typing", "xxhash",
)

SANDBOXED = "namespaces"
_MAX_MESSAGE = 1 << 16
_START_TIMEOUT = 30.0
# A reply is one fork away; this only bounds a wedged server.
_REPLY_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 5.0
# The server's environment is what /proc/<agent>/environ shows (a fork keeps the
# original block, whatever os.environ becomes): only the locale goes through, never
# the orchestrator's secrets.
_SERVER_ENV_KEYS = ("LANG", "LC_ALL", "LC_CTYPE")


class LaunchError(EvolveError):
    """An agent could not be launched, or the fork server failed."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one agent process; None leaves the inherited one."""

    memory_bytes: int | None  # RLIMIT_AS
    cpu_seconds: int | None  # RLIMIT_CPU
    open_files: int | None  # RLIMIT_NOFILE
    file_size_bytes: int | None  # RLIMIT_FSIZE
    processes: int | None  # RLIMIT_NPROC: per user, and never binding on root

    def as_tuple(self) -> tuple[int | None, ...]:
        """In the order the fork server applies them."""
        return (self.memory_bytes, self.cpu_seconds, self.open_files,
                self.file_size_bytes, self.processes)


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything the fork server needs to become one agent."""

    agent_id: str
    cwd: str  # the agent directory (absolute)
    env: dict[str, str]  # the agent's complete environment, already scrubbed
    limits: Limits
    writable: tuple[str, ...]  # paths the agent may write (normally (cwd,))
    readonly_within: tuple[str, ...]  # read-only sub-paths of writable ones
    pycache_prefix: str | None  # sys.pycache_prefix for the agent


@dataclass(frozen=True, slots=True)
class Launched:
    """A running agent; ``stdin``/``stdout`` are the caller's to close."""

    agent_id: str
    pid: int
    create_time: float  # psutil's, to recognise the process later
    stdin: int  # write end of the agent's stdin (non-blocking, close-on-exec)
    stdout: int  # read end of the agent's stdout (non-blocking, close-on-exec)


@dataclass(frozen=True, slots=True)
class Exited:
    """An agent that ended; ``returncode`` is -signal when killed, as in subprocess."""

    agent_id: str
    pid: int
    returncode: int


class Launcher:
    """Client of the fork server: spawn agents, hear of their exits."""

    def __init__(self, *, sandbox: bool = True,
                 preload: Sequence[str] = DEFAULT_PRELOAD) -> None:
        self._sandbox = sandbox
        self._preload = tuple(preload)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._events: socket.socket | None = None
        self._status = "not started"
        self._running: dict[int, str] = {}

    # --- Life of the fork server ---------------------------------------------------

    def start(self) -> None:
        """Start the fork server, or restart it if it died; no-op while it runs."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            self._release()
            self._launch_server()

    def _launch_server(self) -> None:
        control, server_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        events, server_events = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds = (server_control.fileno(), server_events.fileno())
        command = [sys.executable, "-I", "-m", "evolve_ai.forkserver", str(os.getpid()),
                   *map(str, fds)]
        env = {key: os.environ[key] for key in _SERVER_ENV_KEYS if key in os.environ}
        try:
            # Pipes as its stdin and stdout, so that the stdio objects Python makes for
            # it are those an agent gets (see forkserver); its own session, so that a
            # Ctrl-C meant for the orchestrator does not reach it.
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                pass_fds=fds, env=env, cwd="/", start_new_session=True)
        except OSError as error:
            raise LaunchError(f"cannot start the fork server: {error}") from error
        finally:
            server_control.close()
            server_events.close()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()
        self._control, self._events = control, events
        events.setblocking(False)
        control.settimeout(_START_TIMEOUT)
        try:
            control.send(marshal.dumps(("init", self._sandbox, list(self._preload))))
            _, _, self._status = self._receive_reply()
        except LaunchError:
            self._release()
            raise
        control.settimeout(_REPLY_TIMEOUT)

    def close(self) -> None:
        """Stop the fork server; it kills every agent it forked before exiting."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._control is not None:
            self._control.close()  # the server sees EOF: kills its children, exits
        process = self._process
        if process is not None:
            try:
                process.wait(_CLOSE_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._events is not None:
            self._events.close()
        self._process = self._control = self._events = None
        self._running.clear()

    @property
    def alive(self) -> bool:
        """Whether the fork server runs (its agents die with it)."""
        return self._process is not None and self._process.poll() is None

    @property
    def sandbox_status(self) -> str:
        """``"namespaces"``, or ``"rlimits only: <reason>"``; known after ``start``."""
        return self._status

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # --- Agents ------------------------------------------------------------------------

    def spawn(self, spec: LaunchSpec, stderr_fd: int) -> Launched:
        """Fork one agent; ``stderr_fd`` stays the caller's (the agent gets a copy)."""
        request = marshal.dumps(("spawn", spec.agent_id, spec.cwd, spec.env,
                                 spec.limits.as_tuple(), spec.writable,
                                 spec.readonly_within, spec.pycache_prefix))
        if len(request) > _MAX_MESSAGE:
            raise LaunchError(f"agent {spec.agent_id}: launch request too large "
                              f"({len(request)} bytes; environment too big?)")
        with self._lock:
            control = self._require_control()
            stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC)
            stdout_read, stdout_write = os.pipe2(os.O_CLOEXEC)
            try:
                socket.send_fds(control, [request], [stdin_read, stdout_write, stderr_fd])
                reply = self._receive_reply()
            except BaseException:
                os.close(stdin_write)
                os.close(stdout_read)
                raise
            finally:  # only the agent may hold these ends, or it never sees EOF
                os.close(stdin_read)
                os.close(stdout_write)
            if reply[0] != "ok":
                os.close(stdin_write)
                os.close(stdout_read)
                raise LaunchError(f"agent {spec.agent_id}: {reply[1]}")
            pid = int(reply[1])
            self._running[pid] = spec.agent_id
        os.set_blocking(stdin_write, False)
        os.set_blocking(stdout_read, False)
        return Launched(spec.agent_id, pid, _create_time(pid), stdin_write, stdout_read)

    def _require_control(self) -> socket.socket:
        if self._control is None:
            raise LaunchError("the launcher is not started")
        return self._control

    def _receive_reply(self) -> tuple[Any, ...]:
        """The server's answer on the control socket; any failure leaves it unusable."""
        control = self._require_control()
        try:
            data = control.recv(_MAX_MESSAGE)
        except TimeoutError:
            data, reason = b"", "does not answer"
        except OSError as error:
            data, reason = b"", f"failed: {error}"
        else:
            reason = "is gone"
        if not data:
            # A late answer would be taken for the next one's: stop talking to it.
            self._abandon()
            raise LaunchError(f"the fork server {reason}{self._server_exit()}")
        reply: tuple[Any, ...] = marshal.loads(data)
        return reply

    def _abandon(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._control is not None:
            self._control.close()
            self._control = None

    def _server_exit(self) -> str:
        if self._process is None:
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = self._process.wait(1.0)
            return f" (exit status {code})"
        return ""

    def fileno(self) -> int:
        """Readable when exit reports are pending (or the fork server is gone)."""
        if self._events is None:
            raise LaunchError("the launcher is not started")
        return self._events.fileno()

    def read_exits(self) -> list[Exited]:
        """Drain pending exit reports without blocking.

        When the fork server has died, its agents died with it: each one still known
        is reported once as killed by SIGKILL; ``alive`` is then False, ``fileno()``
        stays readable, and ``start()`` brings a new server (with a new fileno).
        """
        with self._lock:
            if self._events is None:
                return []
            exits: list[Exited] = []
            while True:
                try:
                    data = self._events.recv(_MAX_MESSAGE)
                except BlockingIOError:
                    return exits
                except OSError:
                    data = b""
                if not data:
                    exits.extend(self._orphans())
                    return exits
                for agent_id, pid, returncode in marshal.loads(data):
                    self._running.pop(pid, None)
                    exits.append(Exited(agent_id, pid, returncode))

    def _orphans(self) -> list[Exited]:
        orphans = [Exited(agent_id, pid, -signal.SIGKILL)
                   for pid, agent_id in self._running.items()]
        self._running.clear()
        return orphans


def _create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        # Already gone (a setup failure can be that quick): its exit report follows,
        # and no live process will ever need recognising by this time.
        return time.time()
