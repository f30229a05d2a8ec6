"""Thin wrappers over Linux calls the standard library lacks (prctl, syncfs, namespaces).

``die_with_parent`` and ``syncfs`` return False where the call is unavailable, so
callers can fall back; the sandbox calls below raise OSError instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import threading
from functools import cache
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies."""
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return False
    return bool(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0)


def set_child_subreaper() -> bool:
    """Adopt orphaned descendants (instead of init), so that we can reap them."""
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return False
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def name_thread() -> None:
    """Give the calling thread its Python name in the kernel too (``evolve-`` dropped,
    15 bytes at most), so that ``top -H``, ``ps -L`` and per-thread CPU figures say
    which service works; a no-op where prctl is missing."""
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return
    name = threading.current_thread().name.removeprefix("evolve-").encode()[:15]
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def syncfs(fd: int) -> bool:
    """Flush the filesystem holding ``fd``: one barrier for many written files."""
    libc = _libc()
    if libc is None or not hasattr(libc, "syncfs"):
        return False
    return bool(libc.syncfs(fd) == 0)


CAP_CHOWN, CAP_SETGID, CAP_SETUID, CAP_SYS_ADMIN = 0, 6, 7, 21


def capable(*capabilities: int) -> bool:
    """Whether this process holds every one of ``capabilities`` (``CAP_*``), effective
    now: root in a container often lacks some, and root's uid alone proves nothing."""
    try:
        with open("/proc/self/status", "rb") as file:
            for line in file:
                if line.startswith(b"CapEff:"):
                    held = int(line.split()[1], 16)
                    return all(held >> capability & 1 for capability in capabilities)
    except OSError:
        pass
    return False


# --- Namespaces, mounts and privileges, for the agent sandbox -------------------------
# These raise OSError (with the kernel's errno) instead of returning False: the launcher
# needs the reason to report why it fell back to rlimits only.

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# mount_setattr arrived after the syscall tables were unified: one number on every
# architecture we care about (alpha and mips, which differ, are not among them).
_SYS_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442, "arm64": 442, "riscv64": 442}


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


# Signatures of the libc functions called through ``_function``.
_SIGNATURES: dict[str, tuple[type[Any], ...]] = {
    "unshare": (ctypes.c_int,),
    "setns": (ctypes.c_int, ctypes.c_int),
    "mount": (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
              ctypes.c_char_p),
    "syscall": (ctypes.c_long, ctypes.c_long, ctypes.c_char_p, ctypes.c_ulong,
                ctypes.c_void_p, ctypes.c_size_t),  # as mount_setattr uses it
    "capset": (ctypes.c_void_p, ctypes.c_void_p),
    "prctl": (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong),
}
_MOUNT_SETATTR = _SYS_MOUNT_SETATTR.get(os.uname().machine)
# capset only reads these (it writes the header back only on a version mismatch).
_CAP_HEADER = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
_NO_CAPABILITIES = (_CapData * 2)()


@cache
def _function(name: str) -> Any:
    """A typed handle on a libc function; ``libc[name]`` is a fresh object, so typing it
    never changes how the untyped ``libc.name`` used above behaves."""
    libc = _libc()
    if libc is None:
        raise OSError(errno.ENOSYS, "libc is not loadable")
    try:
        function = libc[name]
    except AttributeError:
        raise OSError(errno.ENOSYS, f"libc has no {name}") from None
    function.argtypes = _SIGNATURES[name]
    function.restype = ctypes.c_int
    return function


def warm_up() -> None:
    """Resolve the sandbox calls now: a fork server does it once, not every child."""
    for name in _SIGNATURES:
        with contextlib.suppress(OSError):
            _function(name)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    """Move this process into new namespaces (``CLONE_*`` flags)."""
    _check(_function("unshare")(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Join the namespace ``fd`` refers to (for CLONE_NEWPID: that of our next children)."""
    _check(_function("setns")(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    """mount(2); ``data`` holds the filesystem's options (a tmpfs's size...)."""
    _check(_function("mount")(_encode(source), _encode(target), _encode(fstype), flags,
                              _encode(data)), f"mount {target}")


def mount_setattr(path: str, *, recursive: bool = False, attr_set: int = 0,
                  attr_clr: int = 0) -> None:
    """Change the attributes (e.g. read-only) of the mount at ``path`` (Linux >= 5.12)."""
    if _MOUNT_SETATTR is None:
        raise OSError(errno.ENOSYS, "mount_setattr: syscall number unknown here")
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    _check(_function("syscall")(_MOUNT_SETATTR, AT_FDCWD, _encode(path), flags,
                                ctypes.byref(attr), ctypes.sizeof(attr)),
           f"mount_setattr {path}")


def drop_privileges() -> None:
    """Give up every capability and forbid regaining any, even through execve of a
    set-uid program or as uid 0: without this, a sandboxed root (or the owner of a user
    namespace) could simply remount its view writable."""
    _check(_function("capset")(ctypes.byref(_CAP_HEADER), ctypes.byref(_NO_CAPABILITIES)),
           "capset")
    prctl = _function("prctl")
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    # Not dumpable: /proc/<pid>/root, cwd, environ and mem of this process become
    # inaccessible to unprivileged peers, so one agent cannot reach into another's
    # writable directory through /proc (its owner, the orchestrator, keeps access).
    _check(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(DUMPABLE)")


def set_dumpable(dumpable: bool) -> None:
    _check(_function("prctl")(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "prctl(DUMPABLE)")


def _encode(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)
