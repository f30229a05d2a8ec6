"""Processes of a benchmark: those it left inside its temporary directory, and the CPU
of named threads."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil


def under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + os.sep)


def processes_under(root: Path) -> list[psutil.Process]:
    """Live processes whose working directory is inside ``root`` (never this one)."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE or not under(process.cwd(), root):
                continue
        except psutil.Error:
            continue
        found.append(process)
    return found


def sweep(root: Path) -> int:
    """SIGKILL, one by one, every process found working inside ``root``; how many."""
    found = processes_under(root)
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(found, timeout=5.0)
    return len(found)


def thread_cpu(pid: int, prefix: str) -> float:
    """CPU seconds so far of ``pid``'s threads whose kernel name starts with ``prefix``
    (read from ``/proc``: a service's own cost, apart from the rest of the process)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith(prefix):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total
