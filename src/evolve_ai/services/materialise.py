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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

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
        files.append((path.relative_to(directory).as_posix(), key))
        if key not in known:
            blobs[key] = data
    known.update(blobs)
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


class Shelf:
    """The node's side: bytes by digest, agents' directories and the commons under
    ``root``, and the genomes agents rewrote since they were last reported."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commons = root / COMMONS
        self.blobs: dict[str, bytes] = {}
        self._genomes: dict[str, tuple[Path, tuple[int, int] | None]] = {}  # agent -> seen
        (root / "agents").mkdir(parents=True, exist_ok=True)
        self.commons.mkdir(parents=True, exist_ok=True)

    def place(self, agent_id: str, shipped: Bundle, uid: int | None) -> Path:
        """Lay the agent's directory out afresh (what it wrote before is gone)."""
        self.blobs.update(shipped.blobs)
        if "/" in agent_id or agent_id in ("", ".", ".."):
            raise LaunchError(f"not an agent id: {agent_id!r}")
        directory = self.root / "agents" / agent_id
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for relative, key in shipped.files:
            target = directory / relative
            if ".." in Path(relative).parts or Path(relative).is_absolute():
                raise LaunchError(f"not a path inside an agent: {relative!r}")
            data = self.blobs.get(key)
            if data is None:
                raise LaunchError(f"{relative}: the node lacks its bytes ({key})")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if uid is not None and os.geteuid() == 0:
            for path in [directory, *directory.rglob("*")]:
                os.lchown(path, uid, uid)
        self._genomes[agent_id] = (directory / GENOME, _stamp(directory / GENOME))
        return directory

    def forget(self, agent_id: str) -> None:
        self._genomes.pop(agent_id, None)

    def rewritten(self, agent_ids: set[str] | None = None) -> dict[str, bytes]:
        """Genomes rewritten since placed or last reported (of ``agent_ids``, or all)."""
        found: dict[str, bytes] = {}
        for agent_id, (path, seen) in list(self._genomes.items()):
            if agent_ids is not None and agent_id not in agent_ids:
                continue
            stamp = _stamp(path)
            if stamp == seen or stamp is None:
                continue
            with contextlib.suppress(OSError):
                with path.open("rb") as stream:
                    data = stream.read(MAX_GENOME + 1)
                if len(data) <= MAX_GENOME:
                    found[agent_id] = data
            self._genomes[agent_id] = (path, stamp)
        return found

    def set_commons(self, files: Mapping[str, bytes]) -> None:
        """Make the node's commons hold exactly ``files`` (relative path -> bytes)."""
        fresh = self.root / f".{COMMONS}.new"
        shutil.rmtree(fresh, ignore_errors=True)
        for relative, data in files.items():
            if ".." in Path(relative).parts or Path(relative).is_absolute():
                continue
            target = fresh / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        fresh.mkdir(exist_ok=True)
        fresh.chmod(0o755)
        old = self.root / f".{COMMONS}.old"
        shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.commons.rename(old)
        fresh.rename(self.commons)
        shutil.rmtree(old, ignore_errors=True)


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


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size
