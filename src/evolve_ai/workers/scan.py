"""Scan, validate and sync a chunk of agents (pass stages 1-3), in a pool worker.

Per agent: stat every file and rehash only what changed since the last scan,
validate the genome, check business files against the template's manifest, put
the wiring back in step with the genome, compile the active modules into the
orchestrator's pycache, and measure. Nothing here imports or runs agent code, and
nothing writes a genome or a business file.
"""

from __future__ import annotations

import dataclasses
import errno
import marshal
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, NewType

from evolve_ai.core import genome as genome_codec
from evolve_ai.core import metrics as metrics_core
from evolve_ai.core import wiring
from evolve_ai.core.catalogue import WIRING_PATHS, Catalogue
from evolve_ai.core.fingerprint import code_hash, hash_bytes
from evolve_ai.core.records import ScanOutcome
from evolve_ai.errors import GenomeError
from evolve_ai.services.files import atomic_write

MAX_FILE_BYTES = 16 * 1024 * 1024
GENOME = "genome.bin"
SKIPPED_DIRS = frozenset({"__pycache__"})



class FileStat(NamedTuple):
    """One file as the last scan saw it: unchanged size, times and inode keep the digest.

    ctime too: an in-place rewrite can put size, inode and mtime back (utime), never ctime.
    """

    path: str  # relative to the agent directory
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    digest: str


# The orchestrator never reads an agent's file stats, it only hands them back at the
# next scan: they travel as one marshal blob, which pickles as cheaply as bytes do
# (a thousand agents' stats as NamedTuples cost ~40 ms more per pass to unpickle).
Stats = NewType("Stats", bytes)


def pack_stats(stats: dict[str, FileStat]) -> Stats:
    return Stats(marshal.dumps(tuple(tuple(s) for s in stats.values())))


def unpack_stats(blob: Stats | None) -> dict[str, FileStat]:
    """The stats a blob holds; an idle agent hands back the same blob pass after pass, so
    each worker keeps what it decoded (a bounded cache: it is cleared when full)."""
    if blob is None:
        return {}
    stats = _unpacked.get(blob)
    if stats is None:
        stats = {entry[0]: FileStat._make(entry) for entry in marshal.loads(blob)}
        if len(_unpacked) >= UNPACKED_CACHE:
            _unpacked.clear()
        _unpacked[blob] = stats
    return stats


@dataclass(frozen=True, slots=True)
class ScanInput:
    agent_id: str
    directory: str
    genome_hash: str | None  # the genome last accepted
    code_hash: str | None  # the code hash last recorded
    stats: Stats | None  # the last scan's file stats; None: rehash everything
    template: str | None = None  # the fingerprint of its template version


@dataclass(frozen=True, slots=True)
class ScanResult:
    agent_id: str
    outcome: ScanOutcome
    reason: str | None
    genome_hash: str | None
    code_hash: str | None
    stats: Stats
    rehashed: int  # files whose digest was computed again
    genome: bytes | None = None  # canonical bytes, only when the genome changed
    genome_changed: bool = False
    code_changed: bool = False
    metrics: metrics_core.Metrics | None = None


@dataclass(frozen=True, slots=True)
class ScanContext:
    catalogue: Catalogue  # of the newest template version
    pycache_prefix: str | None
    disk_bytes: int | None = None  # what an agent's directory may hold (limits.disk_mb)
    files: int | None = None  # files and directories in it (limits.files)
    # Older versions that agents still run, by fingerprint: each is checked against its own.
    versions: Mapping[str, Catalogue] = dataclasses.field(default_factory=dict)


class _Refused(Exception):
    """The agent cannot run: quarantined or disabled, with a reason."""

    def __init__(self, outcome: ScanOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


# Per-worker caches keyed by content digest: template files are identical in
# every agent, so each is compiled and measured once per worker, not per agent.
_pyc_cache: dict[str, bytes] = {}
UNPACKED_CACHE = 20_000  # agents' stats kept decoded per worker
_unpacked: dict[bytes, dict[str, FileStat]] = {}
_metrics_cache: dict[str, metrics_core.ModuleMetrics] = {}


def scan_chunk(context: ScanContext, inputs: list[ScanInput]) -> list[ScanResult]:
    return [scan_agent(context, item) for item in inputs]


def scan_agent(context: ScanContext, item: ScanInput) -> ScanResult:
    if item.template is not None and item.template in context.versions:
        context = dataclasses.replace(context, catalogue=context.versions[item.template])
    root = Path(item.directory)
    stats: dict[str, FileStat] = {}
    rehashed = [0]
    previous = unpack_stats(item.stats)
    try:
        stats = _stat_tree(root, previous, rehashed)
        _check_integrity(stats, context.catalogue)
        _check_disk(item.directory, context, stats)
        idle = (item.genome_hash is not None and previous.get(GENOME) == stats[GENOME]
                and all(previous.get(p) == stats.get(p) for p in WIRING_PATHS))
        if idle:
            # Nothing the agent or anyone else could have changed: no decode, no render.
            genome_hash = item.genome_hash
            assert genome_hash is not None
            sources = {path: s.digest for path, s in stats.items() if path.startswith("src/")}
            same = (item.stats is not None and len(stats) == len(previous)
                    and all(previous.get(path) is s for path, s in stats.items()))
            return ScanResult(item.agent_id, "ok", None, genome_hash,
                              code_hash(sources, genome_hash),
                              item.stats if same and item.stats else pack_stats(stats),
                              rehashed[0])
        genome, genome_bytes, genome_hash = _genome(root, context.catalogue)
        _sync_wiring(root, genome, context.catalogue, stats)
        sources = {path: s.digest for path, s in stats.items() if path.startswith("src/")}
        new_code_hash = code_hash(sources, genome_hash)
        _compile(root, genome, context, stats, full=item.stats is None)
        metrics = _metrics(root, genome, context.catalogue, stats)
    except _Refused as refused:
        return ScanResult(item.agent_id, refused.outcome, refused.reason, item.genome_hash,
                          item.code_hash, pack_stats(stats), rehashed[0])
    genome_changed = genome_hash != item.genome_hash
    return ScanResult(
        agent_id=item.agent_id, outcome="ok", reason=None, genome_hash=genome_hash,
        code_hash=new_code_hash, stats=pack_stats(stats), rehashed=rehashed[0],
        genome=genome_bytes if genome_changed else None, genome_changed=genome_changed,
        code_changed=new_code_hash != item.code_hash, metrics=metrics,
    )


def _stat_tree(root: Path, previous: dict[str, FileStat], rehashed: list[int]
               ) -> dict[str, FileStat]:
    """Stat genome.bin and every file under src/; digest only what changed.

    Plain strings and ``DirEntry.stat`` rather than pathlib: this loop runs
    for every file of every agent on every pass.
    """
    base = str(root)
    try:
        if not stat.S_ISDIR(os.lstat(base).st_mode):
            raise _Refused("quarantined", "agent directory is not a directory")
    except FileNotFoundError:
        raise _Refused("quarantined", "agent directory is missing") from None
    stats: dict[str, FileStat] = {}
    try:
        info = os.lstat(f"{base}/{GENOME}")
    except FileNotFoundError:
        raise _Refused("quarantined", "invalid genome: genome.bin is missing") from None
    _record(base, GENOME, info, previous, stats, rehashed)
    pending = ["src"]
    while pending:
        relative = pending.pop()
        try:
            with os.scandir(f"{base}/{relative}") as listing:
                entries = list(listing)
        except FileNotFoundError:
            raise _Refused("quarantined", f"tampered: {relative}/ is missing") from None
        except NotADirectoryError:
            raise _Refused("quarantined", f"tampered: {relative} is not a directory") from None
        for entry in entries:
            path = f"{relative}/{entry.name}"
            if entry.is_symlink():
                raise _Refused("quarantined", f"tampered: {path} is a symbolic link")
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIPPED_DIRS:
                    pending.append(path)
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing: the next pass sees the tree as it is
            _record(base, path, info, previous, stats, rehashed)
    return stats


def _record(base: str, relative: str, info: os.stat_result, previous: dict[str, FileStat],
            stats: dict[str, FileStat], rehashed: list[int]) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise _Refused("quarantined", f"tampered: {relative} is not a regular file")
    old = previous.get(relative)
    if (old is not None and old.size == info.st_size and old.mtime_ns == info.st_mtime_ns
            and old.ctime_ns == info.st_ctime_ns and old.inode == info.st_ino):
        stats[relative] = old
        return
    data = _read(Path(base, relative), relative)
    rehashed[0] += 1
    stats[relative] = FileStat(relative, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                               info.st_ino, hash_bytes(data))


def _read(path: Path, relative: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read without following links and without reading more than ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused("quarantined", f"tampered: {relative} is a symbolic link") from None
        raise _Refused("quarantined", f"cannot read {relative}: {exc.strerror}") from None
    try:
        chunks = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        what = "invalid genome" if relative == GENOME else "tampered"
        raise _Refused("quarantined", f"{what}: {relative} is over {limit} bytes")
    return data


def _genome(root: Path, catalogue: Catalogue) -> tuple[genome_codec.Genome, bytes, str]:
    """Decode and validate the genome; its canonical bytes and their digest."""
    data = _read(root / GENOME, GENOME, genome_codec.MAX_BYTES)
    try:
        genome = genome_codec.decode(data, catalogue)
    except GenomeError as exc:
        raise _Refused("quarantined", f"invalid genome: {exc}") from None
    canonical = genome_codec.encode(genome)
    return genome, canonical, hash_bytes(canonical)


def _check_disk(root: str, context: ScanContext, stats: dict[str, FileStat]) -> None:
    """Disable an agent whose directory holds more than its budget of bytes or files.

    ``src/`` and the genome were just stat'ed (``stats``); the rest is walked, and the
    walk stops as soon as the budget is passed, so a directory of a million files costs
    no more to judge than one just over the limit.
    """
    if context.disk_bytes is None and context.files is None:
        return
    byte_limit = context.disk_bytes if context.disk_bytes is not None else 1 << 62
    file_limit = context.files if context.files is not None else 1 << 62
    used = sum(s.size for s in stats.values())
    files = len(stats)
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                for entry in listing:
                    if directory == root and entry.name in ("src", GENOME):
                        continue  # counted from stats (src/'s directories are few, ours)
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    files += 1
                    used += info.st_blocks * 512
                    _over(files, file_limit, used, byte_limit)
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone or replaced since the listing: the next pass sees it
        except OSError as error:  # a path too deep, a directory closed to us...
            raise _Refused("disabled", f"disk: its directory cannot be measured "
                                       f"({error.strerror or error})") from None


def _over(files: int, file_limit: int, used: int, byte_limit: int) -> None:
    if files > file_limit:
        raise _Refused("disabled", f"disk: over {file_limit} files (limits.files)")
    if used > byte_limit:
        raise _Refused("disabled", f"disk: over {byte_limit} bytes (limits.disk_mb)")


def _check_integrity(stats: dict[str, FileStat], catalogue: Catalogue) -> None:
    manifest = dict(catalogue.manifest)
    for path, digest in manifest.items():
        seen = stats.get(path)
        if seen is None:
            raise _Refused("quarantined", f"tampered: {path} is missing")
        if seen.digest != digest:
            raise _Refused("quarantined", f"tampered: {path} differs from the template")
    for path in stats:
        if path.startswith("src/") and path not in manifest and path not in WIRING_PATHS:
            raise _Refused("quarantined", f"tampered: unexpected file {path}")


def _sync_wiring(root: Path, genome: genome_codec.Genome, catalogue: Catalogue,
                 stats: dict[str, FileStat]) -> None:
    """Rewrite the wiring files whose content no longer matches the genome."""
    for path, data in wiring.render(genome, catalogue).items():
        digest = hash_bytes(data)
        current = stats.get(path)
        if current is not None and current.digest == digest:
            continue
        target = root / path
        try:
            atomic_write(target, data)
        except OSError as exc:  # e.g. a link planted where the temp file goes
            raise _Refused("quarantined", f"tampered: cannot rewrite {path}: {exc}") from None
        info = os.lstat(target)
        stats[path] = FileStat(path, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                               info.st_ino, digest)


def _active_paths(genome: genome_codec.Genome, catalogue: Catalogue) -> list[str]:
    modules = [entry.path for entry, _ in genome.expressed(catalogue)]
    return [*(entry.path for entry in catalogue.core), *modules, *sorted(WIRING_PATHS)]


def _compile(root: Path, genome: genome_codec.Genome, context: ScanContext,
             stats: dict[str, FileStat], *, full: bool) -> None:
    """Byte-compile every module the agent will import; a failure disables the agent.

    The .pyc files go to the orchestrator's pycache prefix (read-only for the
    agent), in unchecked-hash form so identical sources give identical bytes.
    After the first (``full``) scan, business files can no longer change
    without quarantine, so only the wiring and newly activated modules are
    compiled again.
    """
    prefix = context.pycache_prefix
    for path in _active_paths(genome, context.catalogue):
        target = None if prefix is None else Path(pyc_path(prefix, str(root / path)))
        if (not full and target is not None and path not in WIRING_PATHS
                and target.exists()):
            continue
        digest = stats[path].digest
        code = _pyc_cache.get(digest)
        if code is None:
            source = _read(root / path, path)
            try:
                code = _pyc_bytes(source, path)
            except (SyntaxError, ValueError) as exc:
                line = getattr(exc, "lineno", None)
                where = f"{path}:{line}" if line else path
                raise _Refused("disabled", f"build failed: {where}: {exc}") from None
            _pyc_cache[digest] = code
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, code, durable=False)  # rebuilt from sources if lost


def _pyc_bytes(source: bytes, path: str) -> bytes:
    import importlib.util
    import marshal

    code = compile(source, path, "exec", dont_inherit=True)
    source_hash = importlib.util.source_hash(source)
    # PEP 552 header: magic, flags=0b01 (hash-based, unchecked), source hash.
    return (importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + source_hash
            + marshal.dumps(code))


def pyc_path(prefix: str, source: str) -> str:
    """Where Python looks for the .pyc of ``source`` when ``sys.pycache_prefix`` is ``prefix``."""
    head, tail = os.path.split(source)
    base = tail.rpartition(".")[0]
    return os.path.join(prefix, head.lstrip(os.sep), f"{base}.{sys.implementation.cache_tag}.pyc")


def _metrics(root: Path, genome: genome_codec.Genome, catalogue: Catalogue,
             stats: dict[str, FileStat]) -> metrics_core.Metrics:
    expressed = []
    for entry, names in genome.expressed(catalogue):
        digest = stats[entry.path].digest
        measured = _metrics_cache.get(digest)
        if measured is None:
            measured = metrics_core.module_metrics(_read(root / entry.path, entry.path))
            _metrics_cache[digest] = measured
        expressed.append((measured, names))
    return metrics_core.combine(expressed, genome.mutations)
