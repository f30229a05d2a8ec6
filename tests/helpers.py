"""Helpers shared by tests of several packages (the ones users may want live in
``evolve_ai.testing``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from evolve_ai.services.workspace import Workspace


def hold_lock(workspace: Workspace, role: str) -> subprocess.Popen[bytes]:
    """Another process holding the lock, as a running life-cycle would."""
    code = textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(workspace.lock_path)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, b"{role} " + str(os.getpid()).encode())
        print("held", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"held\n"
    return proc
