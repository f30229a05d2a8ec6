"""``ForkServerLauncher``: agents forked by a pre-warmed, sandboxed fork server.

The fork server (``evolve_ai.forkserver``) has already imported what agents import;
each agent is one ``fork()`` that sets up its sandbox (docs/security.md) and runs
``agent.main`` in-process, the observable equivalent of ``python -m agent.main``.
The orchestrator never imports or runs agent code itself.

``spawn`` creates the agent's stdin and stdout pipes; the orchestrator's ends are
returned in ``Launched`` and belong to the caller. The fork server dies with the
*thread* that started it (PR_SET_PDEATHSIG): call ``start`` and ``spawn`` from the
main thread or one that lives as long as the launcher.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import marshal
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Sequence
from types import TracebackType
from typing import Any, Self

import psutil

from evolve_ai._wire import MAX_MESSAGE
from evolve_ai.services.launcher import Exited, Launched, LaunchError, LaunchSpec, Usage

# What the default agent template imports (agent_template/src/agent/*.py), plus what a
# child needs to run it: imported once in the fork server, inherited by every fork.
# Nothing more: every preloaded page is one the server copies at each fork (dataclasses,
# which the template no longer uses, was 13% of its private memory).
DEFAULT_PRELOAD: tuple[str, ...] = (
    "collections", "collections.abc", "fractions", "functools", "hashlib", "io",
    "itertools", "json", "math", "msgpack", "os", "pathlib", "random", "runpy", "sys",
    "tempfile", "traceback", "typing", "xxhash",
)

_START_TIMEOUT = 30.0
# A reply is one fork away; this only bounds a wedged server.
_REPLY_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 5.0
_FD_LIMIT = 1 << 16
# The server's environment is what /proc/<agent>/environ shows (a fork keeps the
# original block, whatever os.environ becomes): only the locale goes through, never
# the orchestrator's secrets.
_SERVER_ENV_KEYS = ("LANG", "LC_ALL", "LC_CTYPE")


class ForkServerLauncher:
    """Client of the fork server: spawn agents, hear of their exits (a ``Launcher``).

    ``fileno()`` is an epoll fd that stays the same for the launcher's whole life, even
    when a dead fork server is replaced: register it once in a selector.
    """

    def __init__(self, *, sandbox: bool = True,
                 preload: Sequence[str] = DEFAULT_PRELOAD) -> None:
        self._sandbox = sandbox
        self._preload = tuple(preload)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._events: socket.socket | None = None
        self._status = "not started"
        self._pids_status = "not started"
        self._memory_status = "not started"
        self._running: dict[int, str] = {}
        self._server_gone = False  # its events socket said EOF: it is dead or dying
        # Readable when exit reports are pending: the events socket of the current
        # server, and a pipe for reports we make up ourselves (agents of a dead server).
        self._poller: select.epoll | None = None
        self._wake_read = self._wake_write = -1
        self._queued: list[Exited] = []

    # --- Life of the fork server ---------------------------------------------------

    def start(self) -> None:
        """Start the fork server, or a new one if it died; no-op while it runs.

        Raises this process's soft limit of open files towards the hard one (up to
        65536): the orchestrator holds two pipe ends per agent.

        The fork server dies with the *thread* that starts it (PR_SET_PDEATHSIG):
        call this from the main thread, or one that lives as long as the launcher.
        """
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._alive():
            return
        _raise_fd_limit()
        if self._poller is None:
            self._poller = select.epoll()
            self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._poller.register(self._wake_read, select.EPOLLIN)
        self._release(orphans=True)
        self._launch_server(self._poller)

    def _launch_server(self, poller: select.epoll) -> None:
        control, server_control = _socketpair()
        events, server_events = _socketpair()
        fds = (server_control.fileno(), server_events.fileno())
        command = [sys.executable, "-I", "-m", "evolve_ai.forkserver", str(os.getpid()),
                   *map(str, fds)]
        env = {key: os.environ[key] for key in _SERVER_ENV_KEYS if key in os.environ}
        try:
            # Pipes as its stdin and stdout, so that the stdio objects Python makes for
            # it are those an agent gets (see forkserver); its own session, so that a
            # Ctrl-C meant for the orchestrator does not reach it.
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=None if _is_open(2) else subprocess.DEVNULL,
                pass_fds=fds, env=env, cwd="/", start_new_session=True)
        except OSError as error:
            control.close()
            events.close()
            raise LaunchError(f"cannot start the fork server: {error}") from error
        finally:
            server_control.close()
            server_events.close()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        self._process, self._control, self._events = process, control, events
        self._server_gone = False
        events.setblocking(False)
        poller.register(events, select.EPOLLIN)
        control.settimeout(_START_TIMEOUT)
        try:
            control.send(marshal.dumps(("init", self._sandbox, list(self._preload))))
            _, _, self._status, self._pids_status, self._memory_status = (
                self._receive_reply())
        except (OSError, LaunchError) as error:
            self._release(orphans=False)
            if isinstance(error, LaunchError):
                raise
            raise LaunchError(f"cannot start the fork server: {error}") from error
        control.settimeout(_REPLY_TIMEOUT)

    def close(self) -> None:
        """Stop the fork server; it kills every agent it forked before exiting."""
        with self._lock:
            self._release(orphans=False)
            if self._poller is not None:
                self._poller.close()
                os.close(self._wake_read)
                os.close(self._wake_write)
                self._poller = None
            self._queued.clear()

    def _release(self, *, orphans: bool) -> None:
        """Let go of the current server; its agents die with it (PR_SET_PDEATHSIG)."""
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
            if orphans:  # what it reported before dying, then the agents it took along
                self._queue(self._drain_events())
            if self._poller is not None and not self._server_gone:
                self._poller.unregister(self._events)
            self._events.close()
        if orphans:
            self._queue(self._orphans())
        self._process = self._control = self._events = None
        self._running.clear()
        self._server_gone = False

    def _queue(self, exits: list[Exited]) -> None:
        if exits:
            self._queued.extend(exits)
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_write, b"!")

    @property
    def alive(self) -> bool:
        """Whether the fork server runs (its agents die with it)."""
        return self._alive()

    def _alive(self) -> bool:
        return (self._process is not None and not self._server_gone
                and self._control is not None and self._process.poll() is None)

    @property
    def sandbox_status(self) -> str:
        """``"namespaces"``, or ``"rlimits only: <reason>"``; known after ``start``."""
        return self._status

    @property
    def memory_status(self) -> str:
        """``"memory cgroup"`` when each agent's processes together are held to
        ``LaunchSpec.memory_bytes`` by the kernel, else ``"no memory cgroup: <reason>"``."""
        return self._memory_status

    @property
    def pids_status(self) -> str:
        """``"pids cgroup"`` when each agent gets a pids cgroup limited to
        ``Limits.processes``, else ``"no pids cgroup: <reason>"``; known after ``start``."""
        return self._pids_status

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # --- Agents ------------------------------------------------------------------------

    def spawn(self, spec: LaunchSpec, stderr_fd: int) -> Launched:
        """Fork one agent; ``stderr_fd`` stays the caller's (the agent gets a copy).

        If the fork server died since ``start``, a new one is started first (its old
        agents are reported killed by ``read_exits``). A failure of the child's own
        setup (a missing directory, a refused mount) is not an error here: the agent
        exits with status 127 and says why on its stderr.
        """
        relative = [path for path in (spec.cwd, *spec.writable, *spec.readonly_within)
                    if not os.path.isabs(path)]
        if relative:
            raise LaunchError(f"agent {spec.agent_id}: paths must be absolute: {relative[0]}")
        request = marshal.dumps(("spawn", spec.limits.processes, spec.memory_bytes,
                                 marshal.dumps((
            spec.agent_id, spec.cwd, spec.env, spec.limits.as_tuple(), spec.writable,
            spec.readonly_within, spec.pycache_prefix, spec.uid))))
        if len(request) > MAX_MESSAGE:
            raise LaunchError(f"agent {spec.agent_id}: launch request too large "
                              f"({len(request)} bytes; environment too big?)")
        with self._lock:
            if self._poller is None:
                raise LaunchError("the launcher is not started")
            self._start()  # a no-op unless the server died
            pid, stdin, stdout = self._fork(request, stderr_fd)
            self._running[pid] = spec.agent_id
        return Launched(spec.agent_id, pid, _create_time(pid), stdin, stdout)

    def _fork(self, request: bytes, stderr_fd: int) -> tuple[int, int, int]:
        """Ask for one fork; the orchestrator's ends of the agent's stdin and stdout."""
        try:
            stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC)
        except OSError as error:
            raise LaunchError(f"cannot create the agent's pipes: {error}") from error
        try:
            stdout_read, stdout_write = os.pipe2(os.O_CLOEXEC)
        except OSError as error:
            os.close(stdin_read)
            os.close(stdin_write)
            raise LaunchError(f"cannot create the agent's pipes: {error}") from error
        try:
            self._send(request, [stdin_read, stdout_write, stderr_fd])
            reply = self._receive_reply()
            if reply[0] != "ok":
                raise LaunchError(str(reply[1]))
        except BaseException:
            os.close(stdin_write)
            os.close(stdout_read)
            raise
        finally:  # only the agent may hold these ends, or it never sees EOF
            os.close(stdin_read)
            os.close(stdout_write)
        os.set_blocking(stdin_write, False)
        os.set_blocking(stdout_read, False)
        return int(reply[1]), stdin_write, stdout_read

    def _send(self, request: bytes, fds: list[int]) -> None:
        if self._control is None:
            raise LaunchError("the fork server is not running")
        try:
            socket.send_fds(self._control, [request], fds)
        except OSError as error:
            # A datagram is sent whole or not at all: a bad argument leaves the server
            # as it was; anything else means it is gone or wedged.
            if error.errno in (errno.EBADF, errno.EINVAL, errno.EMSGSIZE):
                raise LaunchError(f"cannot send the launch request: {error}") from error
            self._abandon()
            raise LaunchError(f"the fork server is gone ({error.strerror or error})"
                              f"{self._server_exit()}") from error

    def _receive_reply(self) -> tuple[Any, ...]:
        """The server's answer on the control socket; any failure leaves it unusable."""
        if self._control is None:
            raise LaunchError("the fork server is not running")
        try:
            data = self._control.recv(MAX_MESSAGE)
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

    def signal_group(self, pid: int, sig: int) -> None:
        """Signal an agent's process group (each agent leads its own session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def measure(self, pids: Collection[int]) -> dict[int, Usage]:
        """One walk of ``/proc``: each agent group's processes, and their resident memory
        and CPU added up (an agent is all its processes, not its leader alone)."""
        return measure_groups(pids)

    # --- Exits -------------------------------------------------------------------------

    def placement(self) -> dict[str, int]:
        return {}  # one machine

    def fileno(self) -> int:
        """Readable when exit reports are pending; the same fd until ``close``."""
        if self._poller is None:
            raise LaunchError("the launcher is not started")
        return self._poller.fileno()

    def read_exits(self) -> list[Exited]:
        """Drain pending exit reports without blocking.

        When the fork server has died, its agents died with it: each one still known
        is reported once as killed by SIGKILL, and ``alive`` is False until ``start``
        or the next ``spawn`` brings a new server.
        """
        with self._lock:
            exits, self._queued = self._queued, []
            if self._wake_read >= 0:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_read, 4096):
                        pass
            return exits + self._drain_events()

    def _drain_events(self) -> list[Exited]:
        exits: list[Exited] = []
        if self._events is None or self._server_gone:
            return exits
        while True:
            try:
                data = self._events.recv(MAX_MESSAGE)
            except BlockingIOError:
                return exits
            except OSError:
                data = b""
            if not data:
                # Gone: stop watching a socket that would now always read as ready.
                self._server_gone = True
                if self._poller is not None:
                    self._poller.unregister(self._events)
                return exits + self._orphans()
            for pid, returncode in marshal.loads(data):
                exits.append(Exited(self._running.pop(pid, ""), pid, returncode))

    def _orphans(self) -> list[Exited]:
        orphans = [Exited(agent_id, pid, -signal.SIGKILL)
                   for pid, agent_id in self._running.items()]
        self._running.clear()
        return orphans


def _socketpair() -> tuple[socket.socket, socket.socket]:
    """A SOCK_SEQPACKET pair whose fds are above 0-2 (where a daemon may have holes),
    since the server's end must survive Popen's setup of the server's stdio."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if theirs.fileno() < 3:
        moved = fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD_CLOEXEC, 3)
        theirs.close()
        theirs = socket.socket(fileno=moved)
    return ours, theirs


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _raise_fd_limit() -> None:
    """Two pipe ends per agent (and the caller's logs): a thousand agents need more
    than the customary soft limit of 1024 fds, so take what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _FD_LIMIT if hard == resource.RLIM_INFINITY else min(hard, _FD_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        # Already gone (a setup failure can be that quick): its exit report follows,
        # and no live process will ever need recognising by this time.
        return time.time()


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def measure_groups(leaders: Collection[int]) -> dict[int, Usage]:
    """Usage of the process groups led by ``leaders``, from ``/proc/<pid>/stat`` alone.

    One read per process of the host gives its group, CPU times (its reaped children's
    included) and resident pages: several times cheaper than psutil's calls for each.
    """
    wanted = set(leaders)
    totals: dict[int, list[float]] = {}  # leader -> [processes, rss bytes, cpu seconds]
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # gone since the listing
        try:
            data = os.read(fd, 4096)
        except OSError:
            continue
        finally:
            os.close(fd)
        # After "pid (comm)" (comm may hold spaces and parentheses: split after the last).
        fields = data[data.rfind(b")") + 2:].split()
        try:
            group = int(fields[2])
            if group not in wanted:
                continue
            ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
            rss = int(fields[21]) * _PAGE
        except (IndexError, ValueError):
            continue
        total = totals.setdefault(group, [0, 0, 0.0])
        total[0] += 1
        total[1] += rss
        total[2] += ticks / _TICKS
    return {group: Usage(int(t[0]), int(t[1]), t[2]) for group, t in totals.items()}
