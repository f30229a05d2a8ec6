"""Helpers shared by tests of several packages (the ones users may want live in
``evolve_ai.testing``)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap

from evolve_ai import _linux
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


def root_powers() -> bool:
    """Root with the capabilities a root orchestrator uses (cgroups, uids): not the
    unprivileged run of the launcher tests (``test_unprivileged``), uid 0 without them."""
    return os.geteuid() == 0 and _linux.capable(
        _linux.CAP_SYS_ADMIN, _linux.CAP_SETUID, _linux.CAP_SETGID, _linux.CAP_CHOWN)


# Root without its powers, as near as root comes to an unprivileged user: no capability
# but CAP_SETFCAP (since Linux 5.12 only a creator holding it may map uid 0 into a user
# namespace; an unprivileged user maps its own uid without it), none regained at exec.
WITHOUT_ROOT_POWERS = (
    "setpriv", "--inh-caps=-all,+setfcap", "--ambient-caps=-all,+setfcap",
    "--bounding-set=-all,+setfcap",
    "--securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked")


def user_namespaces_allowed() -> bool:
    """Whether an unprivileged process may make a user namespace on this kernel."""
    for path, closed in (("/proc/sys/user/max_user_namespaces", "0"),
                         ("/proc/sys/kernel/unprivileged_userns_clone", "0")):
        with contextlib.suppress(OSError), open(path, encoding="ascii") as file:
            if file.read().strip() == closed:
                return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on (the probe is closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
