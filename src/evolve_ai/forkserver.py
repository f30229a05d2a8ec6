"""The fork server: a pre-warmed interpreter that forks one child per agent.

Run by ``ForkServerLauncher`` as ``python -I -m evolve_ai.forkserver PARENT_PID
CONTROL_FD EVENTS_FD``, with pipes as stdin and stdout; nothing else should start it.
Starting ``python -m agent.main`` a thousand times costs a thousand interpreter
start-ups and imports of the same modules; here they are paid once, and each agent is
a ``fork()`` (``_agent_child``). The orchestrator never imports agent code: only the
children do. The messages it exchanges with the launcher are ``_wire``'s.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib
import marshal
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from evolve_ai import _cgroups, _linux
from evolve_ai._agent_child import (
    Layers,
    Settled,
    become_agent,
    lock_user_namespaces,
    wait_for_hang_up,
)
from evolve_ai._wire import (
    MAX_MESSAGE,
    NO_PID_NAMESPACE,
    REPORTS_PER_MESSAGE,
    SANDBOXED,
    USER_NAMESPACES_OPEN,
)

# signal.signal wraps this C function with enum conversions that cost a child dozens
# of copied pages; the child calls it directly.
_C_SIGNAL: Any = importlib.import_module("_signal").signal
_SIGCHLD, _SIG_DFL = int(signal.SIGCHLD), int(signal.SIG_DFL)


# --- Server start: preload, signals, sandbox -------------------------------------------


def preload(modules: Sequence[str]) -> None:
    """Import what agents will import, once, so that every fork inherits it warm."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # a missing optional module is simply not preloaded
            continue


def normalize_signals() -> None:
    """Give the server the dispositions an agent's ``python -m`` would start with.

    Dispositions set to ignore and the signal mask survive exec, so the orchestrator's
    could leak into every agent; children then only undo our SIGCHLD handler.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    python_own = {signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGKILL,
                  signal.SIGSTOP}
    for sig in signal.valid_signals():
        if sig not in python_own and signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def isolate() -> tuple[str, Alone | None, bool]:
    """Enter new mount and network namespaces with the whole tree read-only, and check
    that each agent can be given a pid namespace of its own.

    Returns the sandbox status; when agents get their own pid namespace, how to fork
    them so; and whether agents can be kept from making user namespaces. The status is
    ``SANDBOXED``, ``NO_PID_NAMESPACE: <reason>``, ``USER_NAMESPACES_OPEN: <reason>``,
    or ``"rlimits only: <reason>"`` when the kernel or our privileges refuse a step
    (agents then get rlimits and no more).
    """
    uid, gid = os.getuid(), os.getgid()
    flags = _linux.CLONE_NEWNS | _linux.CLONE_NEWNET
    try:
        try:
            _linux.unshare(flags)
            own_user_namespace = False
        except PermissionError:
            # Unprivileged (or root without CAP_SYS_ADMIN, as in many containers): in a
            # user namespace of our own we hold the powers over what we make there.
            _linux.unshare(flags | _linux.CLONE_NEWUSER)
            _map_identity(uid, gid)
            own_user_namespace = True
        # Private first, or our read-only flag and later bind mounts would propagate
        # back to the orchestrator's namespace through shared mounts.
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
        _linux.mount_setattr("/", recursive=True, attr_set=_linux.MOUNT_ATTR_RDONLY)
    except OSError as error:
        return f"rlimits only: {error.strerror or error}", None, False
    try:
        alone = Alone(own_user_namespace)
        problem = _probe_user_namespace_lock(alone)
    except OSError as error:
        return f"{NO_PID_NAMESPACE}: {error.strerror or error}", None, False
    if problem:
        return f"{USER_NAMESPACES_OPEN}: {problem}", alone, False
    return SANDBOXED, alone, True


class Alone:
    """Forks children that are each pid 1 of a pid namespace of their own.

    With powers over our own pid namespace, we make a namespace, fork, and come back
    (setns). In a user namespace of our own we cannot come back (our pid namespace
    belongs to the host's user namespace), so a short-lived helper makes the namespace,
    forks the child and exits: the orphan comes to us, its subreaper. That costs one
    more fork per agent, and the child must wait for the helper to be gone before it
    arms its parent-death signal (see ``fork``).
    """

    def __init__(self, through_helper: bool) -> None:
        self.server = os.getpid()
        self.ours: int | None = None  # our pid namespace, to come back to
        if not through_helper:
            self.ours = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def fork(self) -> tuple[int, tuple[int, int] | None]:
        """``(pid, None)`` in the server. In the child ``(0, None)``, or ``(0, (helper,
        fd))`` when a helper forked it: its pid, and a pipe that hangs up at its end."""
        if self.ours is None:
            return self._fork_through_helper()
        _linux.unshare(_linux.CLONE_NEWPID)
        try:
            return os.fork(), None
        finally:
            if os.getpid() == self.server:  # in the server: later children are not its
                _linux.setns(self.ours, _linux.CLONE_NEWPID)

    def _fork_through_helper(self) -> tuple[int, tuple[int, int] | None]:
        report_read, report_write = os.pipe2(os.O_CLOEXEC)
        try:
            gone_read, gone_write = os.pipe2(os.O_CLOEXEC)
        except OSError:
            _close_all((report_read, report_write))
            raise
        try:
            helper = os.fork()
        except OSError:
            _close_all((report_read, report_write, gone_read, gone_write))
            raise
        if helper == 0:
            os.close(report_read)
            helper = os.getpid()
            _helper(report_write, gone_write)  # returns in the grandchild only
            return 0, (helper, gone_read)
        _close_all((report_write, gone_read, gone_write))
        try:
            report = os.read(report_read, 8)  # or EOF: the helper died without a child
        finally:
            os.close(report_read)
            os.waitpid(helper, 0)
        if len(report) != 8:
            raise OSError(errno.EAGAIN, "cannot fork in a pid namespace of its own")
        return int.from_bytes(report, "little"), None


def _helper(report: int, gone: int) -> None:
    """Make a pid namespace, fork its first process, tell the server its pid, exit.
    Returns in that process only."""
    try:
        _linux.unshare(_linux.CLONE_NEWPID)
        pid = os.fork()
    except BaseException:
        os._exit(1)
    if pid:
        with contextlib.suppress(OSError):
            os.write(report, pid.to_bytes(8, "little"))
        os._exit(0)
    os.close(report)
    os.close(gone)


def _probe_user_namespace_lock(alone: Alone) -> str:
    """Try, in a child set up as an agent would be, the lock on user namespaces: what
    went wrong, or "" when a user namespace made from inside is refused."""
    child, helper = alone.fork()
    if child == 0:
        code = 1
        try:
            if helper is not None:
                wait_for_hang_up(helper[1])
            _linux.unshare(_linux.CLONE_NEWNS)
            _linux.mount("proc", "/proc", "proc", _linux.MS_NOSUID | _linux.MS_NODEV)
            lock_user_namespaces()
            code = 2
            _linux.unshare(_linux.CLONE_NEWUSER)  # must fail now
        except OSError:
            code = 0 if code == 2 else 1
        finally:
            os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    return {0: "", 2: "a user namespace could still be made"}.get(
        code, "the kernel refused to set it up")


def _map_identity(uid: int, gid: int) -> None:
    """Keep our own uid and gid inside the new user namespace (unmapped ids are nobody)."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w", encoding="ascii") as file:
            file.write(text)


# --- The server loop -------------------------------------------------------------------


class Server:
    """Answers spawn requests and reports every child's exit, until the control EOF."""

    def __init__(self, control: socket.socket, events: socket.socket, layers: Layers,
                 groups: _cgroups.AgentGroups | None, alone: Alone | None = None,
                 memory: _cgroups.AgentGroups | None = None) -> None:
        self.control = control
        self.events = events
        self.layers = layers
        self.alone = alone  # each agent gets a pid namespace of its own
        self.groups = groups
        self.group_of: dict[int, str] = {}  # agent pid -> its pids cgroup
        self.memory = memory
        self.memory_of: dict[int, str] = {}  # agent pid -> its memory cgroup
        self.children: set[int] = set()
        self.pending: list[tuple[int, int]] = []
        self.pid = os.getpid()
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller = select.poll()
        self.waiting_to_send = False
        self.settled = Settled()

    def run(self) -> None:
        # The C-level handler writes to the wakeup fd at once; the Python one does nothing.
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore)
        self.events.setblocking(False)
        self.poller.register(self.control, select.POLLIN)
        self.poller.register(self.wakeup_read, select.POLLIN)
        control = self.control.fileno()
        while True:
            for fd, _ in self.poller.poll():
                if fd == control:
                    if not self.serve_one():
                        self.kill_all()
                        return
                elif fd == self.wakeup_read:
                    self.drain_wakeup()
                    self.reap()
            self.flush()

    def serve_one(self) -> bool:
        """Handle one control message; False on end of file."""
        try:
            data, fds, flags, _ = socket.recv_fds(self.control, MAX_MESSAGE, 3)
        except ConnectionError:
            return False
        if not data and not fds:
            return False
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 3:
            _close_all(fds)
            self.reply(("error", "malformed spawn request (too large, or not 3 fds)"))
            return True
        try:
            _, max_pids, max_memory, request = marshal.loads(data)
        except (ValueError, TypeError, EOFError):
            _close_all(fds)
            self.reply(("error", "malformed spawn request"))
            return True
        self.spawn(request, fds, max_pids, max_memory)
        return True

    def spawn(self, request: bytes, fds: list[int], max_pids: int | None,
              max_memory: int | None) -> None:
        group: tuple[str, int] | None = None  # its name and its cgroup.procs fd
        memory: tuple[str, int] | None = None
        try:
            if self.groups is not None and max_pids is not None:
                group = self.groups.prepare(max_pids)
            if self.memory is not None and max_memory is not None:
                memory = self.memory.prepare(max_memory)
            pid, helper = self.fork()
        except OSError as error:
            _close_all(fds)
            self.forget_groups(group, memory)
            self.reply(("error", f"cannot start the agent: {error.strerror or error}"))
            return
        if pid == 0:
            self.forget_in_child()
            become_agent(request, fds, self.pid, self.layers, self.settled,
                         tuple(g[1] for g in (group, memory) if g is not None), helper)
        _close_all(fds)  # only the agent may hold its pipe ends
        for made, of in ((group, self.group_of), (memory, self.memory_of)):
            if made is not None:
                os.close(made[1])
                of[pid] = made[0]
        self.children.add(pid)
        self.reply(("ok", pid))

    def forget_groups(self, group: tuple[str, int] | None,
                      memory: tuple[str, int] | None) -> None:
        """The groups made for an agent that could not be started."""
        for made, groups in ((group, self.groups), (memory, self.memory)):
            if made is not None and groups is not None:
                os.close(made[1])
                with contextlib.suppress(OSError):
                    groups.release(made[0])

    def fork(self) -> tuple[int, tuple[int, int] | None]:
        """Fork the next agent: pid 1 of a pid namespace of its own, when we can.

        Alone in its namespace, an agent sees and can signal no other process (not us,
        not the orchestrator, not its siblings), and whatever it starts dies with it.
        In the child, the second value is ``Alone.fork``'s helper, if any.
        """
        if self.alone is None:
            return os.fork(), None
        return self.alone.fork()

    def release(self, group: str) -> None:
        if self.groups is not None:
            with contextlib.suppress(OSError):  # a group that will not go is only a leak
                self.groups.release(group)

    def forget_in_child(self) -> None:
        """Undo what is the server's alone, before anything can reuse its fds."""
        signal.set_wakeup_fd(-1)
        _C_SIGNAL(_SIGCHLD, _SIG_DFL)
        self.control.detach()
        self.events.detach()
        gc.enable()

    def reply(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):  # the orchestrator is gone: next read is EOF
            self.control.send(marshal.dumps(message))

    def drain_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_read, 4096):
                pass
        except BlockingIOError:
            pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:  # others are orphans we adopted as subreaper
                self.children.discard(pid)
                self.pending.append((pid, os.waitstatus_to_exitcode(status)))
                group = self.group_of.pop(pid, None)
                if group is not None:  # what it left behind dies with it
                    self.release(group)
                memory = self.memory_of.pop(pid, None)
                if memory is not None and self.memory is not None:
                    with contextlib.suppress(OSError):
                        self.memory.release(memory)
            else:
                for groups in (self.groups, self.memory):
                    if groups is not None and groups.leftover:
                        groups.retry_leftover()

    def flush(self) -> None:
        """Send pending exit reports; if the orchestrator lags, keep them for later."""
        while self.pending:
            batch = self.pending[:REPORTS_PER_MESSAGE]
            try:
                self.events.send(marshal.dumps(batch))
            except BlockingIOError:
                self.wait_to_send(True)
                return
            except OSError:
                self.pending.clear()  # nobody listens any more
                break
            del self.pending[:REPORTS_PER_MESSAGE]
        self.wait_to_send(False)

    def wait_to_send(self, waiting: bool) -> None:
        if waiting and not self.waiting_to_send:
            self.poller.register(self.events, select.POLLOUT)
        elif self.waiting_to_send and not waiting:
            self.poller.unregister(self.events)
        self.waiting_to_send = waiting

    def kill_all(self, grace: float = 2.0) -> None:
        """Kill every agent's process group, then reap them so none is left a zombie."""
        for pid in self.children:
            for kill in (os.killpg, os.kill):  # killpg fails if it has not setsid yet
                with contextlib.suppress(OSError):
                    kill(pid, signal.SIGKILL)
        if self.groups is not None:
            for group in self.group_of.values():
                self.groups.kill(group)
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.001)
        for groups in (self.groups, self.memory):
            if groups is not None:
                groups.close()


def _ignore(signum: int, frame: object) -> None:
    """SIGCHLD only needs to wake the loop, through the wakeup fd."""


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# --- Entry point -----------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    parent, control_fd, events_fd = (int(value) for value in argv[1:4])
    # First of all: die with the orchestrator, and make sure it did not die already.
    _linux.die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:
        return 1
    control = socket.socket(fileno=control_fd)
    events = socket.socket(fileno=events_fd)
    init = control.recv(MAX_MESSAGE)
    if not init:
        return 1
    _, sandbox, modules = marshal.loads(init)
    preload(modules)
    _linux.set_child_subreaper()  # orphans of agents come back to us, to be reaped
    normalize_signals()
    # Before isolate(): the groups' directory must be opened on the writable mount.
    groups, pids_status = _cgroups.AgentGroups.create(os.getpid())
    if _cgroups.one_hierarchy("pids", "memory"):  # cgroup v2: one group would need both
        memory, memory_status = None, "no memory cgroup: not on a unified cgroup v2 hierarchy"
    else:
        memory, memory_status = _cgroups.AgentGroups.create(os.getpid(), _cgroups.MEMORY)
    status, alone, locked = (isolate() if sandbox
                             else ("rlimits only: sandbox disabled", None, False))
    layers = Layers(confined=bool(sandbox), namespaces=status.startswith(SANDBOXED),
                    own_pids=alone is not None, no_user_namespaces=locked)
    _linux.warm_up()
    server = Server(control, events, layers, groups, alone, memory)
    # Collections would touch, hence copy, every inherited object in every child, and
    # the server makes little garbage: freeze what exists, collect nothing more here.
    gc.freeze()
    gc.disable()
    control.send(marshal.dumps(("ready", os.getpid(), status, pids_status, memory_status)))
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
