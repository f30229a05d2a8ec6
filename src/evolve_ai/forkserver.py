"""The fork server: a pre-warmed interpreter that forks one child per agent.

Run by ``evolve_ai.services.launcher`` as
``python -I -m evolve_ai.forkserver PARENT_PID CONTROL_FD EVENTS_FD``, with pipes as
stdin and stdout; nothing else should start it. Starting ``python -m agent.main`` a
thousand times costs a thousand interpreter start-ups and imports of the same
modules; here they are paid once, and each agent is a ``fork()`` that sets up its
sandbox and runs ``agent.main`` in-process with runpy. The orchestrator never
imports agent code: only the children do.

A child pays for every page of the server it writes to (copy-on-write), even for a
reference count: so the server settles beforehand everything it can (signal
dispositions, sys.path, libc handles, stdio objects) and the child does as little
Python as possible before the agent's own code.

Wire protocol (``marshal`` of plain tuples; both sockets are SOCK_SEQPACKET, so one
send is one message):

- control, orchestrator -> server: ``("init", sandbox, preload)`` once, answered by
  ``("ready", server_pid, sandbox_status, pids_status)``; then ``("spawn", max_pids,
  request)`` carrying the agent's stdin, stdout and stderr fds, where ``request`` is
  the marshal of ``(agent_id, cwd, env, limits, writable, readonly_within,
  pycache_prefix)`` (decoded by the child only), answered by ``("ok", pid)`` or
  ``("error", message)``. ``max_pids`` (or None) limits the agent's pids cgroup.
  End of file means the orchestrator is gone or closing: kill every agent and exit.
- events, server -> orchestrator: a list of ``(pid, returncode)`` per message,
  ``returncode`` being negative for a signal, as in subprocess.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import gc
import importlib
import io
import marshal
import os
import resource
import runpy
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from evolve_ai import _cgroups, _linux
from evolve_ai._wire import MAX_MESSAGE, REPORTS_PER_MESSAGE, SANDBOXED, SETUP_FAILED

_RLIMITS = (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_NOFILE,
            resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC)
# Environment variables that change how Python sets up its stdio.
_STDIO_VARIABLES = ("PYTHONIOENCODING", "PYTHONUNBUFFERED")

# signal.signal wraps this C function with enum conversions that cost a child dozens
# of copied pages; the child calls it directly.
_C_SIGNAL: Any = importlib.import_module("_signal").signal
_SIGCHLD, _SIG_DFL = int(signal.SIGCHLD), int(signal.SIG_DFL)


class SetupError(Exception):
    """A child could not become its agent; the message names the failed step."""


class Settled:
    """What the server computes once so that children need not (see the module doc)."""

    def __init__(self) -> None:
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if self.fd_limit == resource.RLIM_INFINITY:
            self.fd_limit = 1 << 20
        self.path = tuple(entry for entry in sys.path if entry)
        self.environ = tuple(os.environ)


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


def isolate() -> str:
    """Enter new mount and network namespaces with the whole tree read-only.

    Returns the sandbox status: ``SANDBOXED``, or ``"rlimits only: <reason>"`` when the
    kernel or our privileges refuse a step (agents then get rlimits and no more).
    """
    uid, gid = os.getuid(), os.getgid()
    user_namespace = os.geteuid() != 0
    flags = _linux.CLONE_NEWNS | _linux.CLONE_NEWNET
    if user_namespace:
        flags |= _linux.CLONE_NEWUSER
    try:
        _linux.unshare(flags)
        if user_namespace:
            _map_identity(uid, gid)
        # Private first, or our read-only flag and later bind mounts would propagate
        # back to the orchestrator's namespace through shared mounts.
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
        _linux.mount_setattr("/", recursive=True, attr_set=_linux.MOUNT_ATTR_RDONLY)
    except OSError as error:
        return f"rlimits only: {error.strerror or error}"
    return SANDBOXED


def _map_identity(uid: int, gid: int) -> None:
    """Keep our own uid and gid inside the new user namespace (unmapped ids are nobody)."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w", encoding="ascii") as file:
            file.write(text)


# --- The child: from fork to agent.main ------------------------------------------------


def become_agent(data: bytes, fds: Sequence[int], server_pid: int,
                 sandboxed: str | None, settled: Settled, procs: int | None) -> NoReturn:
    """Turn this freshly forked child into the agent; never returns.

    ``data`` is the spawn request, decoded here rather than in the server, whose time
    is the one that counts. ``sandboxed`` is None without sandbox, else the server's
    sandbox status. ``procs`` is the ``cgroup.procs`` fd of the agent's pids cgroup.
    """
    code = SETUP_FAILED
    stderr = fds[2]  # the agent's log, wherever it sits before and after the dup2
    agent_id = "?"
    try:
        agent_id, cwd, env, limits, writable, readonly_within, pycache = marshal.loads(data)
        _step("session", _detach, server_pid)
        if procs is not None:  # before anything of the agent's can fork
            _step("pids cgroup", _cgroups.join, procs)
        _step("stdio", _take_stdio, fds, settled.fd_limit)
        stderr = 2
        _step("rlimits", _apply_limits, limits)
        if sandboxed is not None:
            _step("sandbox", _confine, writable, readonly_within, sandboxed == SANDBOXED)
        _step("chdir", os.chdir, cwd)
        _step("interpreter", _prepare_interpreter, cwd, env, pycache, settled)
        code = _run_main()
    except SetupError as error:
        _say(stderr, f"evolve launcher: cannot start agent {agent_id}: {error}\n")
    except BaseException:  # whatever happens, never return into the server's loop
        _say(stderr, f"evolve launcher: {traceback.format_exc()}")
    finally:
        os._exit(code)


def _step(name: str, function: Any, *args: Any) -> None:
    try:
        function(*args)
    except (OSError, ValueError) as error:
        raise SetupError(f"{name}: {error}") from error


def _say(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, text.encode("utf-8", "backslashreplace"))


def _detach(server_pid: int) -> None:
    os.setsid()  # own session and process group: killpg(pid) reaches the whole tree
    if not _linux.die_with_parent(signal.SIGKILL):
        raise OSError(errno.ENOSYS, "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != server_pid:  # the server died before prctl: nobody to die with
        raise OSError(errno.ESRCH, "the fork server is gone")


def _take_stdio(fds: Sequence[int], fd_limit: int) -> None:
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    # Nothing else of the server's may survive: other agents' pipe ends above all, or
    # an agent would keep a sibling's stdin open and it would never see EOF.
    os.closerange(3, fd_limit)


def _apply_limits(limits: Sequence[int | None]) -> None:
    for which, wanted in zip(_RLIMITS, limits, strict=True):
        if wanted is None:
            continue
        hard = resource.getrlimit(which)[1]
        # An unprivileged process may only lower its hard limit.
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(which, (value, value))


def _confine(writable: Sequence[str], readonly_within: Sequence[str],
             namespaces: bool) -> None:
    if namespaces:
        _linux.unshare(_linux.CLONE_NEWNS)
        for path in writable:
            _linux.mount(path, path, None, _linux.MS_BIND | _linux.MS_REC)
            _linux.mount_setattr(path, attr_clr=_linux.MOUNT_ATTR_RDONLY)
        for path in readonly_within:
            if not os.path.exists(path):
                continue  # nothing there to protect
            _linux.mount(path, path, None, _linux.MS_BIND | _linux.MS_REC)
            _linux.mount_setattr(path, attr_set=_linux.MOUNT_ATTR_RDONLY)
    _linux.drop_privileges()


def _prepare_interpreter(cwd: str, env: dict[str, str], pycache: str | None,
                         settled: Settled) -> None:
    for key in settled.environ:
        os.unsetenv(key)
    for key, value in env.items():
        os.putenv(key, value)
    # os.environ mirrors the C environment through a private dict (shared with
    # os.environb); refilling it is far cheaper here than clear() and update(), which
    # walk MutableMapping's Python code, each page of it copied into the child.
    data: dict[bytes, bytes] = os.environ._data  # type: ignore[attr-defined]
    data.clear()
    data.update({os.fsencode(key): os.fsencode(value) for key, value in env.items()})
    if any(name in env for name in _STDIO_VARIABLES):
        _open_stdio(env)
    source = os.path.join(cwd, "src")
    sys.path[:] = (source, *settled.path)
    sys.argv[:] = (os.path.join(source, "agent", "main.py"),)
    sys.dont_write_bytecode = True
    sys.pycache_prefix = pycache
    if "agent" in sys.modules:  # never, unless preloaded by mistake: agent.* needs it
        for name in [name for name in sys.modules
                     if name == "agent" or name.startswith("agent.")]:
            del sys.modules[name]
    atexit._clear()  # the server's exit handlers are not the agent's


def _open_stdio(env: dict[str, str]) -> None:
    """Fresh sys.stdin/stdout/stderr, for an environment that asks for other ones.

    Otherwise the server's own stdio objects fit: they sit on fds 0-2, never used,
    and the launcher gives the server pipes as stdin and stdout, like the agent's.
    """
    encoding, _, errors = env.get("PYTHONIOENCODING", "").partition(":")
    # The server's choices (locale or UTF-8 mode) are those the agent would make.
    encoding = encoding or sys.stdout.encoding
    errors = errors or sys.stdout.errors or "strict"
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    streams = {
        "stdin": _text(0, "rb", encoding, errors, False, False),
        "stdout": _text(1, "wb", encoding, errors, os.isatty(1), unbuffered),
        "stderr": _text(2, "wb", encoding, "backslashreplace", True, unbuffered),
    }
    for name, stream in streams.items():
        # setattr: typeshed declares sys.__stdout__ and co. Final; here they must change.
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _text(fd: int, mode: str, encoding: str, errors: str, line_buffering: bool,
          write_through: bool) -> TextIO:
    # closefd=False, as Python's own stdio: closing sys.stdout leaves fd 1 alone.
    raw = io.FileIO(fd, mode, closefd=False)
    buffer = io.BufferedReader(raw) if mode == "rb" else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffer, encoding=encoding, errors=errors, newline="\n",
                            line_buffering=line_buffering, write_through=write_through)


def _run_main() -> int:
    """Run agent.main as __main__; the exit status Python itself would give."""
    interrupted = False
    try:
        runpy.run_module("agent.main", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = _system_exit_code(exit_.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code, interrupted = 1, True
    except BaseException:  # the agent's uncaught exception
        traceback.print_exc()
        code = 1
    code = _finalize(code)
    if interrupted:  # Python dies of SIGINT on an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _system_exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finalize(code: int) -> int:
    """What the interpreter does at exit: join threads, run atexit, flush stdio."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except Exception:
            traceback.print_exc()
    atexit._run_exitfuncs()
    # Like Python: a closed stream is skipped, an unflushable stdout makes the status 120.
    if sys.stdout is not None and not sys.stdout.closed:
        try:
            sys.stdout.flush()
        except Exception:
            traceback.print_exc()
            code = code or 120
    if sys.stderr is not None and not sys.stderr.closed:
        with contextlib.suppress(Exception):  # nowhere left to report it
            sys.stderr.flush()
    return code


# --- The server loop -------------------------------------------------------------------


class Server:
    """Answers spawn requests and reports every child's exit, until the control EOF."""

    def __init__(self, control: socket.socket, events: socket.socket,
                 sandboxed: str | None, groups: _cgroups.PidsGroups | None) -> None:
        self.control = control
        self.events = events
        self.sandboxed = sandboxed
        self.groups = groups
        self.group_of: dict[int, str] = {}  # agent pid -> its pids cgroup
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
            _, max_pids, request = marshal.loads(data)
        except (ValueError, TypeError, EOFError):
            _close_all(fds)
            self.reply(("error", "malformed spawn request"))
            return True
        self.spawn(request, fds, max_pids)
        return True

    def spawn(self, request: bytes, fds: list[int], max_pids: int | None) -> None:
        group: tuple[str, int] | None = None  # its name and its cgroup.procs fd
        if self.groups is not None and max_pids is not None:
            try:
                group = self.groups.prepare(max_pids)
            except OSError as error:
                _close_all(fds)
                self.reply(("error", f"cannot make the agent's pids cgroup: {error}"))
                return
        try:
            pid = os.fork()
        except OSError as error:
            _close_all(fds)
            if group is not None:
                os.close(group[1])
                self.release(group[0])
            self.reply(("error", f"fork failed: {error.strerror}"))
            return
        if pid == 0:
            self.forget_in_child()
            become_agent(request, fds, self.pid, self.sandboxed, self.settled,
                         None if group is None else group[1])
        _close_all(fds)  # only the agent may hold its pipe ends
        if group is not None:
            os.close(group[1])
            self.group_of[pid] = group[0]
        self.children.add(pid)
        self.reply(("ok", pid))

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
            elif self.groups is not None and self.groups.leftover:
                self.groups.retry_leftover()

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
        if self.groups is not None:
            self.groups.close()


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
    groups, pids_status = _cgroups.PidsGroups.create(os.getpid())
    status = isolate() if sandbox else "rlimits only: sandbox disabled"
    _linux.warm_up()
    server = Server(control, events, status if sandbox else None, groups)
    # Collections would touch, hence copy, every inherited object in every child, and
    # the server makes little garbage: freeze what exists, collect nothing more here.
    gc.freeze()
    gc.disable()
    control.send(marshal.dumps(("ready", os.getpid(), status, pids_status)))
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
