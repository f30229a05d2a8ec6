"""A pids cgroup per agent, made by the fork server: fork() fails past the limit; and,
where the kernel lets us, a memory cgroup: the agent's processes together cannot use
more than its memory limit.

Unlike RLIMIT_NPROC the pids group counts the agent's own tasks only, binds root too, and
lets the server kill what an agent left behind, even after setsid (docs/security.md).
Layout: ``<our cgroup>/evolve-<server pid>/agent-<n>``, on the controller's cgroup v1
hierarchy or on cgroup v2 where the parent delegates the controller. The server opens the
hierarchy before it makes its mount namespace read-only: the open directory still refers
to the writable mount, so it can make groups afterwards. Groups of a server that died
(SIGKILL) are swept by the next server.

Only ``os`` is imported: this runs in the fork server, whose pages every agent shares.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from typing import NamedTuple

PREFIX = "evolve-"
_CGROUP_ROOT = "/sys/fs/cgroup"


class Controller(NamedTuple):
    """A cgroup controller, and the file that limits a group of it (cgroup v1, v2)."""

    name: str
    v1_limit: str
    v2_limit: str
    smallest: int  # a limit the probe group can take


PIDS = Controller("pids", "pids.max", "pids.max", 1)
MEMORY = Controller("memory", "memory.limit_in_bytes", "memory.max", 1 << 20)


class AgentGroups:
    """The server's directory of agent groups (``evolve-<pid>``) of one controller."""

    def __init__(self, parent_fd: int, name: str, fd: int, limit_file: str) -> None:
        self._parent_fd = parent_fd
        self._name = name
        self._fd = fd
        self._limit_file = limit_file
        self._count = 0
        self.leftover: set[str] = set()  # groups of exited agents, not empty yet

    @classmethod
    def create(cls, server_pid: int,
               controller: Controller = PIDS) -> tuple[AgentGroups | None, str]:
        """Our groups' directory, and a status: ``"<name> cgroup"`` or why not."""
        what = f"{controller.name} cgroup"
        try:
            base = own_cgroup(controller.name)
            parent_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            return None, f"no {what}: {error.strerror or error}"
        try:
            sweep_stale(parent_fd)
            name = f"{PREFIX}{server_pid}"
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent_fd)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent_fd)
            v1 = _exists(fd, controller.v1_limit)
            if not v1 and _exists(fd, "cgroup.subtree_control"):  # v2: delegate to agents
                _write(fd, "cgroup.subtree_control", f"+{controller.name}")
            groups = cls(parent_fd, name, fd,
                         controller.v1_limit if v1 else controller.v2_limit)
            probe, procs = groups.prepare(controller.smallest)  # can we make and limit one?
            os.close(procs)
            groups.release(probe)
        except OSError as error:
            os.close(parent_fd)
            return None, f"no {what}: {error.strerror or error}"
        return groups, what

    def prepare(self, limit: int) -> tuple[str, int]:
        """A new group limited to ``limit`` (tasks, bytes), and an fd of its
        ``cgroup.procs``: the child writes its pid there, before it runs anything of the
        agent's."""
        self._count += 1
        name = f"agent-{self._count}"
        os.mkdir(name, 0o755, dir_fd=self._fd)
        try:
            _write(self._fd, f"{name}/{self._limit_file}", str(limit))
            procs = os.open(f"{name}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=self._fd)
            raise
        return name, procs

    def kill(self, name: str) -> None:
        """SIGKILL every task in the group (escapees from the process group included)."""
        kill_members(self._fd, name)

    def release(self, name: str) -> bool:
        """Kill what is left in the group and remove it; False if it is not empty yet
        (the killed tasks still need reaping): call again later."""
        kill_members(self._fd, name)
        try:
            os.rmdir(name, dir_fd=self._fd)
        except FileNotFoundError:
            pass
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise
            self.leftover.add(name)
            return False
        self.leftover.discard(name)
        return True

    def retry_leftover(self) -> None:
        for name in list(self.leftover):
            with contextlib.suppress(OSError):
                self.release(name)

    def close(self) -> None:
        """Remove every group and our directory (call after the agents are reaped)."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self._fd):
                if name.startswith("agent-"):
                    with contextlib.suppress(OSError):
                        self.release(name)
        with contextlib.suppress(OSError):
            os.rmdir(self._name, dir_fd=self._parent_fd)
        os.close(self._fd)
        os.close(self._parent_fd)


def join(procs_fd: int) -> None:
    """Move the calling process into the group whose ``cgroup.procs`` is ``procs_fd``."""
    try:
        os.write(procs_fd, str(os.getpid()).encode())
    finally:
        os.close(procs_fd)


def one_hierarchy(first: str, second: str) -> bool:
    """Whether two controllers of ours live in one directory (cgroup v2), where a task is in
    one group only: an agent's two groups would need to be one."""
    try:
        return own_cgroup(first) == own_cgroup(second)
    except OSError:
        return False


def own_pids_cgroup(mountinfo: str = "/proc/self/mountinfo",
                    cgroup: str = "/proc/self/cgroup") -> str:
    """The directory of this process's own pids cgroup (v1 ``pids`` or v2)."""
    return own_cgroup("pids", mountinfo, cgroup)


def own_cgroup(controller: str, mountinfo: str = "/proc/self/mountinfo",
               cgroup: str = "/proc/self/cgroup") -> str:
    """The directory of this process's own cgroup of ``controller`` (v1, or v2)."""
    with open(cgroup, encoding="utf-8") as file:
        lines = file.read().splitlines()
    v1 = v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            v1 = path
        elif controllers == "":
            v2 = path
    mounts = _cgroup_mounts(mountinfo, controller)
    if v1 is not None and controller in mounts:
        return _under(mounts[controller], v1)
    if v2 is not None and "" in mounts:
        directory = _under(mounts[""], v2)
        with open(os.path.join(directory, "cgroup.subtree_control"), encoding="ascii") as file:
            if controller not in file.read().split():
                raise OSError(errno.ENOTSUP,
                              f"the {controller} controller is not delegated here")
        return directory
    raise OSError(errno.ENOENT, f"no {controller} cgroup hierarchy mounted")


def _cgroup_mounts(mountinfo: str, controller: str) -> dict[str, tuple[str, str]]:
    """``{controller: (root, mount point)}`` for v1, ``{"": ...}`` for v2."""
    mounts: dict[str, tuple[str, str]] = {}
    with open(mountinfo, encoding="utf-8") as file:
        for line in file:
            fields = line.split()
            dash = fields.index("-")
            kind, options = fields[dash + 1], fields[dash + 3].split(",")
            root, point = _unescape(fields[3]), _unescape(fields[4])
            if kind == "cgroup" and controller in options:
                mounts.setdefault(controller, (root, point))
            elif kind == "cgroup2":
                mounts.setdefault("", (root, point))
    return mounts


def _under(mount: tuple[str, str], path: str) -> str:
    root, point = mount
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return os.path.join(point, path.lstrip("/"))


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def sweep_stale(parent_fd: int) -> None:
    """Remove the groups of fork servers that are gone (killed before they could)."""
    for name in os.listdir(parent_fd):
        pid = name.removeprefix(PREFIX)
        if not name.startswith(PREFIX) or not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent_fd)
            try:
                for group in os.listdir(fd):
                    if group.startswith("agent-"):
                        kill_members(fd, group)
                        with contextlib.suppress(OSError):
                            os.rmdir(group, dir_fd=fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=parent_fd)


def kill_members(fd: int, name: str) -> None:
    try:
        with open(f"{name}/cgroup.procs", encoding="ascii",
                  opener=lambda path, flags: os.open(path, flags, dir_fd=fd)) as file:
            pids = [int(line) for line in file if line.strip()]
    except OSError:
        return
    for pid in pids:
        if pid <= 0:  # a task out of our pid namespace's sight reads as 0: not kill(0)
            continue
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exists(fd: int, path: str) -> bool:
    try:
        os.stat(path, dir_fd=fd)
    except FileNotFoundError:
        return False
    return True


def _write(fd: int, path: str, text: str) -> None:
    out = os.open(path, os.O_WRONLY | os.O_CLOEXEC, dir_fd=fd)
    try:
        os.write(out, text.encode("ascii"))
    finally:
        os.close(out)
