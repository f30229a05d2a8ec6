"""Finding and ending the processes a benchmark left inside its temporary directory."""

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
