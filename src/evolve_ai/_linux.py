"""Thin wrappers over Linux calls the standard library lacks (prctl, syncfs).

Each returns False where the call is unavailable, so callers can fall back.
"""

from __future__ import annotations

import ctypes
import signal
from functools import cache

PR_SET_PDEATHSIG = 1


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


def syncfs(fd: int) -> bool:
    """Flush the filesystem holding ``fd``: one barrier for many written files."""
    libc = _libc()
    if libc is None or not hasattr(libc, "syncfs"):
        return False
    return bool(libc.syncfs(fd) == 0)
