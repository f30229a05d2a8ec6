"""``backup``, ``restore`` and ``export``: the population as one checksummed archive,
a workspace made again from one, and one agent as a directory that runs on its own.

An agent's directory is derived data (its template version, its genome, the wiring
rendered from both), so an archive holds what it is derived from: a consistent copy
of the store (SQLite's online backup, while a life cycle may run), every template
version kept, ``agent_template/`` and ``evolve.toml``. ``MANIFEST.json`` lists the
SHA-256 of every member; a restore checks each one before anything is made, and
builds every living agent's directory again.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from evolve_ai.core.records import AgentRow
from evolve_ai.errors import EvolveError
from evolve_ai.operations.making import Template, make_agents
from evolve_ai.services import template as template_service
from evolve_ai.services.files import fsync_dir, sync_filesystem
from evolve_ai.services.store import Store
from evolve_ai.services.workspace import Workspace, pid_alive
from evolve_ai.workers.build import BuildFailed, BuildRequest, build_chunk, prepare

FORMAT = 1
MANIFEST = "MANIFEST.json"
STORE = "evolve.db"
CONFIG = "evolve.toml"
MAX_MEMBER = 1 << 36  # bytes: a member larger than this is no archive of ours
MAX_MANIFEST = 64 << 20
AUTOMATIC = re.compile(r"evolve-g(\d+)-(\d{8}T\d{6}Z)\.tar\.gz")


class ArchiveError(EvolveError):
    """An archive that is not a complete, intact evolve backup."""


@dataclass(frozen=True, slots=True)
class Backup:
    path: Path
    generation: int
    agents: int  # living agents it holds
    size: int  # bytes


def default_path(workspace: Workspace, generation: int) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return workspace.root / "backups" / f"evolve-g{generation}-{stamp}.tar.gz"


def backup(workspace: Workspace, path: Path | None = None) -> Backup:
    """Write the archive at ``path`` (default: ``backups/evolve-g<gen>-<UTC>.tar.gz``),
    complete or not at all (written aside, flushed, then renamed into place)."""
    with Store.open(workspace.db_path) as store, tempfile.TemporaryDirectory(
            dir=workspace.state_dir, prefix=".backup-") as scratch:
        snapshot = Path(scratch) / STORE
        store.snapshot(snapshot)
        with Store.open(snapshot) as copy:  # what the archive holds, not what is now
            generation, living = copy.generation(), len(copy.living_ids())
        target = path or default_path(workspace, generation)
        if target.exists():
            raise EvolveError(f"{target} exists already: choose another path")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        members: dict[str, str] = {}
        try:
            with tarfile.open(partial, "w:gz", format=tarfile.PAX_FORMAT) as archive:
                _add(archive, snapshot, STORE, members)
                if workspace.config_path.is_file():
                    _add(archive, workspace.config_path, CONFIG, members)
                for base, prefix in ((workspace.template_dir, "agent_template"),
                                     (workspace.versions_dir, "templates")):
                    for file in sorted(_files(base)):
                        _add(archive, file, f"{prefix}/{file.relative_to(base).as_posix()}",
                             members)
                manifest = json.dumps({"format": FORMAT, "generation": generation,
                                       "agents": living, "created": time.time(),
                                       "files": members}, indent=1, sort_keys=True).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime = len(manifest), int(time.time())
                archive.addfile(info, io.BytesIO(manifest))
            with open(partial, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(partial, target)
            fsync_dir(target.parent)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return Backup(target, generation, living, target.stat().st_size)


def prune(workspace: Workspace, keep: int) -> list[Path]:
    """Delete automatic backups (``backups/evolve-g*-*.tar.gz``) but the ``keep`` newest."""
    directory = workspace.root / "backups"
    if not directory.is_dir():
        return []
    ours = sorted((p for p in directory.iterdir() if AUTOMATIC.fullmatch(p.name)),
                  key=_age)
    doomed = ours[:-keep] if keep else ours
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def _age(path: Path) -> tuple[str, int]:
    """When an automatic backup was taken: its UTC time, then its generation."""
    match = AUTOMATIC.fullmatch(path.name)
    assert match is not None
    return match.group(2), int(match.group(1))


def _files(base: Path) -> Iterator[Path]:
    if not base.is_dir():
        return
    for current, directories, names in os.walk(base):  # links are not followed
        directories.sort()
        for name in names:
            path = Path(current, name)
            if path.is_file() and not path.is_symlink():
                yield path


def _add(archive: tarfile.TarFile, path: Path, name: str, members: dict[str, str]) -> None:
    data = path.read_bytes()
    members[name] = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(path.stat().st_mtime), 0o644
    archive.addfile(info, io.BytesIO(data))


# --- restore ------------------------------------------------------------------------------


def restore(archive_path: Path, workspace: Workspace, workers: int = 1) -> Backup:
    """Make ``workspace`` (an empty or missing directory) from the archive: its members
    checked against the manifest, every living agent's directory built from its
    template version and genome, all in a directory beside it that is renamed into
    place at the end. A life cycle there resumes; a failed or killed restore leaves
    the directory as it was."""
    root = workspace.root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise EvolveError(f"{root} is not empty: restore into an empty directory")
    if not archive_path.is_file():
        raise EvolveError(f"{archive_path}: no such file")
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{root.name}.restore-*"):  # of a killed restore
        if not pid_alive(stale.name.rpartition("-")[2]):
            shutil.rmtree(stale, ignore_errors=True)
    building = root.parent / f".{root.name}.restore-{os.getpid()}"
    staged = Workspace(building)
    try:
        manifest = _extract(archive_path, staged)
        staged.ensure_layout()
        with Store.open(staged.db_path) as store:
            store.check_integrity()
            rows = store.agents("living")
            _rebuild(staged, rows, store, workers)
        sync_filesystem(building)
        if root.exists():
            root.rmdir()  # empty, as checked
        os.rename(building, root)
        fsync_dir(root.parent)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return Backup(archive_path, int(manifest.get("generation", 0)), len(rows),
                  archive_path.stat().st_size)


def _place(workspace: Workspace, name: str) -> Path:
    """Where an archive member goes in a workspace."""
    if name == STORE:
        return workspace.db_path
    if name.startswith("templates/"):
        return workspace.versions_dir / name.removeprefix("templates/")
    return workspace.root / name  # evolve.toml, agent_template/...


def _extract(archive_path: Path, workspace: Workspace) -> dict[str, Any]:
    """Write every member where it goes in ``workspace``, streamed, then check them all
    against the manifest: its parsed manifest, or ArchiveError."""
    where = f"{archive_path} is not an intact evolve backup"
    digests: dict[str, str] = {}
    manifest_bytes = b""
    try:
        # The whole gzip stream first: tar stops reading at its end marker, before the
        # gzip trailer (CRC, length) that shows a file cut by a few bytes.
        with gzip.open(archive_path, "rb") as whole:
            while whole.read(1 << 20):
                pass
        with tarfile.open(archive_path, "r:gz") as archive:
            for member in archive:
                if (not member.isfile() or not _safe(member.name) or member.size > MAX_MEMBER
                        or member.name in digests
                        or (member.name == MANIFEST and manifest_bytes)):
                    raise ArchiveError(f"{where}: unexpected member {member.name!r}")
                handle = archive.extractfile(member)
                if handle is None:
                    raise ArchiveError(f"{where}: unexpected member {member.name!r}")
                if member.name == MANIFEST:
                    manifest_bytes = handle.read(MAX_MANIFEST + 1)
                    continue
                digests[member.name] = _copy(handle, _place(workspace, member.name))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{where} ({exc})") from None
    try:
        manifest: dict[str, Any] = json.loads(manifest_bytes)
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
    except (KeyError, ValueError, TypeError):
        raise ArchiveError(f"{where}: no usable {MANIFEST}") from None
    listed, held = set(files), set(digests)
    if listed != held or STORE not in held:
        missing = sorted(listed - held) or sorted({STORE} - held)
        raise ArchiveError(f"{where}: "
                           + (f"{missing[0]} is missing" if missing
                              else f"{sorted(held - listed)[0]} is not in the manifest"))
    for name in sorted(held):
        if digests[name] != files[name]:
            raise ArchiveError(f"{where}: {name} does not match its checksum")
    return manifest


def _copy(source: IO[bytes], target: Path) -> str:
    """Copy ``source`` to a new file ``target``; the SHA-256 of what was copied."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(target, "xb") as out:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _safe(name: str) -> bool:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return False
    return name in (MANIFEST, STORE, CONFIG) or path.parts[0] in ("agent_template", "templates")


def _rebuild(workspace: Workspace, rows: list[AgentRow], store: Store, workers: int) -> None:
    """Every living agent's directory, from its version and its genome, version by
    version; what is already listed stays listed (the rows come from the store)."""
    by_version: dict[str, list[AgentRow]] = {}
    for row in rows:
        by_version.setdefault(row.template or "", []).append(row)
    known = store.known_genes()
    for fingerprint, group in by_version.items():
        files, catalogue = (template_service.load_version(workspace.versions_dir, fingerprint)
                            if fingerprint else template_service.load(workspace.template_dir))
        template = Template(files, catalogue.retiring(known))
        requests = []
        for row in group:
            genome = store.genome_bytes(row.genome_hash)
            if genome is None:
                raise ArchiveError(f"the backup lacks the genome of agent {row.id}")
            requests.append(BuildRequest(row.id, genome))
        make_agents(workspace, template, requests, label="restore", generation=0,
                    all_or_nothing=True, workers=workers)  # its rows: listed already


# --- export -------------------------------------------------------------------------------


def export(workspace: Workspace, agent_id: str | None, destination: Path | None
           ) -> tuple[str, Path]:
    """One agent (``None``: the best measured active one) as a directory that runs on
    its own (``cd DIR && PYTHONPATH=src python -m agent.main``): its id, the directory."""
    with Store.open(workspace.db_path) as store:
        if agent_id is None:
            best = [row for row in store.agents("active", "fitness", 1)
                    if row.fitness is not None]
            if not best:
                raise EvolveError("no active agent has been measured yet: nothing is best")
            row = best[0]
        else:
            row = store.find(agent_id)
        genome = store.genome_bytes(row.genome_hash)
        known = store.known_genes()
    if genome is None:
        raise EvolveError(f"agent {row.id}: its genome is not in the store")
    target = destination or Path.cwd() / f"agent-{row.id[:8]}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise EvolveError(f"{target} is not empty: export into a new or empty directory")
    files, catalogue = (template_service.load_version(workspace.versions_dir, row.template)
                        if row.template else template_service.load(workspace.template_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as staging:
        prepare(dict(files), catalogue.retiring(known))
        [built] = build_chunk(staging, [BuildRequest(row.id, genome)])
        if isinstance(built, BuildFailed):
            raise EvolveError(f"agent {row.id} cannot be built: {built.reason}")
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()  # empty: replaced by the built agent
        os.rename(Path(staging) / row.id, target)
    return row.id, target
