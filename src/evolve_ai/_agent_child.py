"""The fork server's child, from ``fork()`` to ``agent.main``: session, pids cgroup,
stdio, rlimits, sandbox, interpreter state, then the agent's code via runpy.

Imported by the fork server only, before any fork. Every page a child writes is a
page it copies, so it does as little Python as it can before the agent's own code.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import importlib
import io
import marshal
import os
import resource
import runpy
import select
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NamedTuple, NoReturn, TextIO

from evolve_ai import _cgroups, _linux
from evolve_ai._wire import SETUP_FAILED

_NO_DEVICES = _linux.MS_NOSUID | _linux.MS_NODEV
# signal.signal's enum conversions would cost the child copied pages: the C function.
_C_SIGNAL: Any = importlib.import_module("_signal").signal
_RLIMITS = (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_NOFILE,
            resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC)
# Emptied for each agent by a small tmpfs of its own.
_SCRATCH = ("/tmp", "/dev/shm", "/run")
_SCRATCH_SIZE = "size=8m,nr_inodes=256,mode=1777"
# Environment variables that change how Python sets up its stdio.
_STDIO_VARIABLES = ("PYTHONIOENCODING", "PYTHONUNBUFFERED")


class SetupError(Exception):
    """A child could not become its agent; the message names the failed step."""


class Settled:
    """What the server computes once so that children need not: each of their writes
    is a page copied."""

    def __init__(self) -> None:
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if self.fd_limit == resource.RLIM_INFINITY:
            self.fd_limit = 1 << 20
        self.path = tuple(entry for entry in sys.path if entry)
        self.environ = tuple(os.environ)
        # Its write end stays the server's alone: at the server's death, the read end
        # hangs up. A child whose uid changes (which clears the parent-death signal)
        # arms the signal again, then looks here whether the server died meanwhile.
        self.lifeline, self.lifeline_end = os.pipe2(os.O_CLOEXEC)


class Layers(NamedTuple):
    """The sandbox's layers the fork server found it can give every agent."""

    confined: bool  # capabilities dropped (False: no sandbox asked for)
    namespaces: bool  # its own mount namespace, one writable directory
    own_pids: bool  # pid 1 of a pid namespace of its own, with its own /proc
    no_user_namespaces: bool  # in a user namespace of its own that may make no other


def become_agent(data: bytes, fds: Sequence[int], server_pid: int, layers: Layers,
                 settled: Settled, procs: Sequence[int],
                 helper: tuple[int, int] | None) -> NoReturn:
    """Turn this freshly forked child into the agent; never returns.

    ``data`` is the spawn request, decoded here rather than in the server, whose time
    is the one that counts. ``procs`` are the ``cgroup.procs`` fds of the agent's
    cgroups (pids, memory). ``helper`` is the pid of the helper that forked us, and a
    pipe that hangs up when it is gone (``forkserver.Alone``), or None.
    """
    code = SETUP_FAILED
    stderr = fds[2]  # the agent's log, wherever it sits before and after the dup2
    agent_id = "?"
    try:
        (agent_id, cwd, env, limits, writable, readonly_within, pycache,
         uid) = marshal.loads(data)
        _step("session", _detach, server_pid, helper)
        for fd in procs:  # before anything of the agent's can fork or allocate
            _step("cgroup", _cgroups.join, fd)
        _step("stdio", _take_stdio, fds, settled.fd_limit, settled.lifeline)
        stderr = 2
        _step("rlimits", _apply_limits, limits)
        if layers.confined:
            _step("sandbox", _confine, writable, readonly_within, layers.namespaces,
                  layers.own_pids)
        if uid is not None:
            _step("uid", _become, uid, cwd)
            _step("session", _still_with_server, settled.lifeline)
        elif layers.confined and os.geteuid() == 0:  # ran with a uid before, maybe
            _step("ownership", _hand_over, cwd, 0)
        os.close(settled.lifeline)
        if layers.no_user_namespaces:
            _step("user namespace", lock_user_namespaces)
        if layers.confined:  # last: the steps above needed their powers
            _step("privileges", _linux.drop_privileges)
        _step("chdir", os.chdir, cwd)
        _step("interpreter", _prepare_interpreter, cwd, env, pycache, settled)
        if layers.own_pids:
            # pid 1 of its namespace: a signal with no handler is ignored there, so a
            # SIGTERM from the supervisor would go unheard. Make it end the agent, as
            # for any process (the agent may still set its own handler).
            _C_SIGNAL(signal.SIGTERM, _terminated)
        code = _run_main()
    except SetupError as error:
        _say(stderr, f"evolve launcher: cannot start agent {agent_id}: {error}\n")
    except BaseException:  # whatever happens, never return into the server's loop
        _say(stderr, f"evolve launcher: {traceback.format_exc()}")
    finally:
        os._exit(code)


def _terminated(signum: int, frame: object) -> None:
    os._exit(128 + signum)  # what a shell reports for a process killed by the signal


def _step(name: str, function: Any, *args: Any) -> None:
    try:
        function(*args)
    except (OSError, ValueError) as error:
        raise SetupError(f"{name}: {error}") from error


def _say(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, text.encode("utf-8", "backslashreplace"))


def _detach(server_pid: int, helper: tuple[int, int] | None) -> None:
    os.setsid()  # own session and process group: killpg(pid) reaches the whole tree
    if helper is not None:  # the helper's death must not count as the server's
        helper_pid, gone = helper
        wait_for_hang_up(gone)
        # Its files are closed before its children go to the server: wait for that too.
        while _parent() == helper_pid:
            os.sched_yield()
    if not _linux.die_with_parent(signal.SIGKILL):
        raise OSError(errno.ENOSYS, "prctl(PR_SET_PDEATHSIG) failed")
    if _parent() != server_pid:  # it died before prctl: nobody to die with
        raise OSError(errno.ESRCH, "the fork server is gone")


def wait_for_hang_up(fd: int) -> None:
    """Block until every write end of the pipe ``fd`` reads from is closed; close it."""
    try:
        while os.read(fd, 1):
            pass
    finally:
        os.close(fd)


def _parent() -> int:
    """Our parent's pid. Alone in a pid namespace, getppid() is 0 (the parent is out of
    sight), but the host's /proc, still mounted here, names it. (Raw reads: a file
    object would cost the child pages of the server's to copy.)"""
    parent = os.getppid()
    if parent:
        return parent
    fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        status = os.read(fd, 4096)
    finally:
        os.close(fd)
    start = status.find(b"\nPPid:")
    return int(status[start + 7: status.find(b"\n", start + 1)]) if start >= 0 else 0


def _take_stdio(fds: Sequence[int], fd_limit: int, lifeline: int) -> None:
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    # Nothing else of the server's may survive: other agents' pipe ends above all, or
    # an agent would keep a sibling's stdin open and it would never see EOF. (The
    # lifeline's read end is closed at the end of the setup.)
    os.closerange(3, lifeline)
    os.closerange(lifeline + 1, fd_limit)


def _still_with_server(lifeline: int) -> None:
    """A change of uid cleared the parent-death signal: arm it again, then make sure the
    server did not die before (its lifeline would have hung up)."""
    if not _linux.die_with_parent(signal.SIGKILL):
        raise OSError(errno.ENOSYS, "prctl(PR_SET_PDEATHSIG) failed")
    poller = select.poll()
    poller.register(lifeline, select.POLLIN)
    if poller.poll(0):  # readable means hung up: nobody ever writes to it
        raise OSError(errno.ESRCH, "the fork server is gone")


def _apply_limits(limits: Sequence[int | None]) -> None:
    for which, wanted in zip(_RLIMITS, limits, strict=True):
        if wanted is None:
            continue
        hard = resource.getrlimit(which)[1]
        # An unprivileged process may only lower its hard limit.
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(which, (value, value))


def _confine(writable: Sequence[str], readonly_within: Sequence[str],
             namespaces: bool, own_pids: bool) -> None:
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
        for path in _SCRATCH:  # empty and small: the host's sockets and files hidden
            # ...unless the workspace lives there (mktemp -d): it must stay in view.
            inside = any(w == path or w.startswith(path + "/") for w in writable)
            if not inside and os.path.isdir(path):
                _linux.mount("tmpfs", path, "tmpfs", _NO_DEVICES, _SCRATCH_SIZE)
        if own_pids:  # a /proc that shows the agent's own namespace only
            _linux.mount("proc", "/proc", "proc", _NO_DEVICES | _linux.MS_NOEXEC)


def _become(uid: int, cwd: str) -> None:
    """Run as ``uid`` from now on: its own directory handed over and closed to others;
    root's file access (``/etc/shadow``, root's sockets, ``/dev/kmsg``) gone."""
    _hand_over(cwd, uid)
    os.setgroups(())
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _hand_over(cwd: str, uid: int) -> None:
    """Make ``uid`` the owner of the agent's directory (the genome written at its birth
    included); if another uid held it (the settings changed), of all it wrote there too.
    ``src/`` and ``pyproject.toml`` are the orchestrator's, and read-only here."""
    owner = os.lstat(cwd).st_uid
    if owner == uid and uid == 0:
        return  # never handed over: nothing to take back
    os.chown(cwd, uid, uid)
    os.chmod(cwd, 0o700 if uid else 0o755)
    with contextlib.suppress(FileNotFoundError):
        os.chown(f"{cwd}/genome.bin", uid, uid, follow_symlinks=False)
    if owner == uid:
        return
    with os.scandir(cwd) as top:
        names = [e.name for e in top if e.name not in ("src", "pyproject.toml", "genome.bin")]
    for name in names:
        path = f"{cwd}/{name}"
        os.chown(path, uid, uid, follow_symlinks=False)
        if os.path.isdir(path) and not os.path.islink(path):
            for root, directories, files in os.walk(path):  # links are not followed
                for entry in (*directories, *files):
                    os.chown(f"{root}/{entry}", uid, uid, follow_symlinks=False)


def lock_user_namespaces() -> None:
    """Enter a user namespace of our own (our ids mapped to themselves) whose
    ``max_user_namespaces`` is 0: the agent can make no user namespace, hence no
    namespace with powers of its own. Needs a /proc of our own pid namespace."""
    uid, gid = os.getuid(), os.getgid()
    _linux.set_dumpable(True)  # after a change of uid, /proc/self/*_map are root's
    _linux.unshare(_linux.CLONE_NEWUSER)
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                       ("/proc/self/gid_map", f"{gid} {gid} 1"),
                       ("/proc/sys/user/max_user_namespaces", "0")):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


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
