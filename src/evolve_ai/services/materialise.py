"""Agents materialised on the node that runs them, with no shared file system.

An agent's directory is derived data: its template version's files, its wiring and its
genome. The head (``bundle``) lists them by content digest and sends the bytes a node
has not had yet: a version's files once per node, the wiring and genome of each agent.
The node (``Shelf``) keeps the bytes by digest, lays the directory out under a root of
its own, and reports the genome back whenever the agent rewrites it; the head's store
and directories stay the source of truth (the head scans what it is sent like any
genome an agent wrote). What else an agent writes stays on its node and goes with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil
import xxhash

from evolve_ai.services.launcher import LaunchError, LaunchSpec

GENOME = "genome.bin"
SHIPPED = ("src", GENOME, "pyproject.toml")  # what an agent's directory is made of
MAX_FILE = 4 << 20  # bytes of one shipped file
MAX_GENOME = 256 * 1024  # as the genome decoder's own bound
COMMONS = "commons"  # the node's copy of the workspace's commons, under its root


class Bundle(NamedTuple):
    """An agent's directory as a list of (relative path, digest), and the bytes of the
    digests the node does not have yet."""

    files: tuple[tuple[str, str], ...]
    blobs: dict[str, bytes]


def digest(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _shipped(directory: Path) -> Iterator[Path]:
    for name in SHIPPED:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()
                              and "__pycache__" not in p.parts)
        elif path.is_file() and not path.is_symlink():
            yield path


def bundle(directory: Path, known: set[str]) -> Bundle:
    """``directory``'s shipped files; ``known`` (the digests the node has) grows by the
    ones sent. Raises LaunchError for a file that cannot be read or is too big."""
    files: list[tuple[str, str]] = []
    blobs: dict[str, bytes] = {}
    for path in _shipped(directory):
        try:
            data = path.read_bytes()
        except OSError as error:
            raise LaunchError(f"cannot read {path}: {error}") from None
        if len(data) > MAX_FILE:
            raise LaunchError(f"{path} is over {MAX_FILE} bytes: not shipped to a node")
        key = digest(data)
        relative = path.relative_to(directory).as_posix()
        files.append((relative, key))
        if relative == GENOME:  # nodes keep no genome: it always travels
            blobs[key] = data
        elif key not in known:
            blobs[key] = data
            known.add(key)
    return Bundle(tuple(files), blobs)


def relocate(spec: LaunchSpec, directory: Path, commons: Path) -> LaunchSpec:
    """``spec`` for the same agent in its node-local ``directory``."""
    head = spec.cwd

    def moved(path: str) -> str:
        if path == head or path.startswith(head + os.sep):
            return str(directory) + path[len(head):]
        return path

    env = {**spec.env, "HOME": str(directory), "EVOLVE_COMMONS": str(commons)}
    return dataclasses.replace(
        spec, cwd=str(directory), env=env, writable=tuple(map(moved, spec.writable)),
        readonly_within=tuple(map(moved, spec.readonly_within)), pycache_prefix=None)


class Report(NamedTuple):
    """An agent's genome as it is now on its node, for the head to keep."""

    agent_id: str
    head: str  # the agent's directory on the head (the launch said it)
    sequence: int  # larger for a later look at the same agent on the same node
    data: bytes  # b"" when genome.bin is no regular file within bounds: invalid there too


@dataclass(slots=True)
class _Placed:
    head: str
    path: Path  # genome.bin on this node
    placed: str  # digest of the genome laid out
    stamp: tuple[int, ...] | None  # of the content last looked at
    current: str  # its digest ("" when not a valid file)
    sequence: int = 0


class Shelf:
    """The node's side: bytes by digest, agents' directories and the commons under
    ``root``, and where each placed agent's genome stands."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commons = root / COMMONS
        self.blobs: dict[str, bytes] = {}  # template files and wiring, never genomes
        self._placed: dict[str, _Placed] = {}
        self._sequence = 0
        (root / "agents").mkdir(parents=True, exist_ok=True)
        self.commons.mkdir(parents=True, exist_ok=True)

    def place(self, agent_id: str, shipped: Bundle, uid: int | None, head: str) -> Path:
        """Lay the agent's directory out afresh (what it wrote before is gone)."""
        if "/" in agent_id or agent_id in ("", ".", ".."):
            raise LaunchError(f"not an agent id: {agent_id!r}")
        for relative, key in shipped.files:
            if relative != GENOME and key in shipped.blobs:
                self.blobs[key] = shipped.blobs[key]
        directory = self.root / "agents" / agent_id
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        genome = ""
        for relative, key in shipped.files:
            target = directory / relative
            if ".." in Path(relative).parts or Path(relative).is_absolute():
                raise LaunchError(f"not a path inside an agent: {relative!r}")
            data = shipped.blobs.get(key) if relative == GENOME else self.blobs.get(key)
            if data is None:
                raise LaunchError(f"{relative}: the node lacks its bytes ({key})")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            genome = key if relative == GENOME else genome
        if uid is not None and os.geteuid() == 0:
            for path in [directory, *directory.rglob("*")]:
                os.lchown(path, uid, uid)
        path = directory / GENOME
        self._placed[agent_id] = _Placed(head, path, genome, _stamp(path), genome)
        return directory

    def remove(self, agent_id: str) -> Report | None:
        """The agent is gone from this node: its last genome if it differs from the one
        laid out, and its directory removed."""
        report = self.report(agent_id)
        self._placed.pop(agent_id, None)
        shutil.rmtree(self.root / "agents" / agent_id, ignore_errors=True)
        return report

    def reports(self) -> list[Report]:
        """Every placed agent whose genome is not the one laid out (the head writes what
        differs from its own copy: a lost answer costs nothing but a pass)."""
        found = [self.report(agent_id) for agent_id in list(self._placed)]
        return [report for report in found if report is not None]

    def report(self, agent_id: str) -> Report | None:
        placed = self._placed.get(agent_id)
        if placed is None:
            return None
        stamp = _stamp(placed.path)
        if stamp != placed.stamp:
            data = _read_genome(placed.path)
            placed.stamp, placed.current = stamp, digest(data) if data else ""
            self._sequence += 1
            placed.sequence = self._sequence
        if placed.current == placed.placed:
            return None
        data = _read_genome(placed.path) if placed.current else b""
        return Report(agent_id, placed.head, placed.sequence, data)

    def set_commons(self, files: Mapping[str, bytes]) -> None:
        """Make the node's commons hold exactly ``files`` (relative path -> bytes)."""
        fresh = self.root / f".{COMMONS}.new"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(mode=0o755)
        for relative, data in files.items():
            if ".." in Path(relative).parts or Path(relative).is_absolute():
                continue
            target = fresh / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        old = self.root / f".{COMMONS}.old"
        shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.commons.rename(old)
        fresh.rename(self.commons)
        shutil.rmtree(old, ignore_errors=True)


def sweep_stale(parent: Path) -> None:
    """Remove the places of node actors that died without closing (``node-<pid>``)."""
    with contextlib.suppress(OSError):
        for place in parent.glob("node-*"):
            pid = place.name.removeprefix("node-")
            if pid.isdigit() and not psutil.pid_exists(int(pid)):
                shutil.rmtree(place, ignore_errors=True)


def _read_genome(path: Path) -> bytes:
    """genome.bin's bytes, or b"" when it is no regular file (a link, a fifo...) or is
    over MAX_GENOME: never followed, never blocked on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        data = os.read(fd, MAX_GENOME + 1)
    except OSError:
        return b""
    finally:
        os.close(fd)
    return data if len(data) <= MAX_GENOME else b""


def commons_files(commons: Path) -> dict[str, bytes]:
    """The workspace's commons as the head ships it (catalogue and published genomes)."""
    files: dict[str, bytes] = {}
    if not commons.is_dir():
        return files
    for path in sorted(commons.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= MAX_FILE:
            with contextlib.suppress(OSError):
                files[path.relative_to(commons).as_posix()] = path.read_bytes()
    return files


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is rewritten, touched back or replaced (never followed)."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino, info.st_mode
