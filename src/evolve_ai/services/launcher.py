"""The launcher seam: what the supervisor needs from whatever starts agent processes.

Two implementations: ``ForkServerLauncher`` (``forkserver_launcher.py``), the real
one, and ``StubLauncher`` (``stub_launcher.py``), in-process fakes driven by a clock
for tests. A cluster launcher plugs in here too. The supervisor sees agents only
through this protocol: pipes, exit reports, group signals and resource usage.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from evolve_ai.errors import EvolveError


class LaunchError(EvolveError):
    """An agent could not be launched, or the launcher itself failed."""


@dataclass(frozen=True, slots=True)
class Rlimits:
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
    """Everything a launcher needs to become one agent."""

    agent_id: str
    cwd: str  # the agent directory (absolute)
    env: dict[str, str]  # the agent's complete environment, already scrubbed
    limits: Rlimits
    writable: tuple[str, ...]  # paths the agent may write (normally (cwd,))
    readonly_within: tuple[str, ...]  # read-only sub-paths of writable ones
    pycache_prefix: str | None  # sys.pycache_prefix for the agent
    uid: int | None = None  # an unprivileged uid (and gid) of its own; None: the launcher's
    memory_bytes: int | None = None  # all its processes together (a memory cgroup)


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
    lost: str | None = None  # why the host it ran on is gone: no doing of the agent's


class Usage(NamedTuple):
    """What one agent's process group uses, measured by the launcher."""

    processes: int  # processes in the group, the leader included
    rss: int | None  # resident bytes, all its processes together; None if unreadable
    cpu: float | None = None  # CPU seconds, all its processes (and reaped children) together


class Launcher(Protocol):
    """Starts agents, reports their exits, signals and measures their process groups."""

    @property
    def alive(self) -> bool:
        """Whether agents can be spawned now without starting anything first."""

    @property
    def sandbox_status(self) -> str:
        """``"namespaces"``, or ``"rlimits only: <reason>"``; known after ``start``."""

    @property
    def pids_status(self) -> str:
        """``"pids cgroup"``, or ``"no pids cgroup: <reason>"``; known after ``start``."""

    @property
    def memory_status(self) -> str:
        """``"memory cgroup"``, or ``"no memory cgroup: <reason>"``; known after ``start``."""

    def start(self) -> None:
        """Get ready to spawn; a no-op when already started."""

    def close(self) -> None:
        """Stop everything this launcher started."""

    def fileno(self) -> int:
        """Readable when exit reports are pending; the same fd until ``close``."""

    def spawn(self, spec: LaunchSpec, stderr_fd: int) -> Launched:
        """Start one agent; ``stderr_fd`` stays the caller's. Raises LaunchError."""

    def read_exits(self) -> list[Exited]:
        """Drain pending exit reports without blocking."""

    def signal_group(self, pid: int, sig: int) -> None:
        """Send ``sig`` to the process group led by ``pid``; gone groups are ignored."""

    def measure(self, pids: Collection[int]) -> dict[int, Usage]:
        """The usage of each group led by one of ``pids`` that still exists."""

    def placement(self) -> dict[str, int]:
        """Agents with a process on each node of a cluster; {} on one machine."""
