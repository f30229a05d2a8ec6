"""Durable file writes: temp file, fsync, rename; and directory fsync."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import threading
import time
from pathlib import Path

from evolve_ai._linux import name_thread, syncfs


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes, never a mix.

    ``durable`` fsyncs the file before the rename and the directory after it;
    callers writing many files under one later barrier (see ``sync_tree``) pass False.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # O_NOFOLLOW: a link planted at the temp name must not redirect the write.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


class Shredder:
    """Deletes directory trees on a background thread.

    Unlinking thousands of small files can take seconds on some filesystems;
    the caller renames a tree into a trash directory (instant, atomic) and
    hands it over, so the loop never waits for the deletion.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def discard(self, path: Path, trash: Path) -> None:
        """Move ``path`` into ``trash`` now; delete it later. A missing path is ignored."""
        trash.mkdir(parents=True, exist_ok=True)
        target = trash / f"{path.name}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            path.rename(target)
        except FileNotFoundError:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="evolve-shredder",
                                            daemon=True)
            self._thread.start()
        self._queue.put(target)

    def close(self, timeout: float = 30.0) -> None:
        """Finish the pending deletions (what is left is debris for the next start)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        name_thread()
        while (path := self._queue.get()) is not None:
            shutil.rmtree(path, ignore_errors=True)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (one barrier for many files).

    syncfs(2) is far cheaper than one fsync per file when a chunk writes
    hundreds of small files; os.sync is the portable fallback.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not syncfs(fd):
            os.sync()
    finally:
        os.close(fd)
