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
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from evolve_ai.core.records import AgentRow
from evolve_ai.errors import EvolveError
from evolve_ai.operations.making import Template, make_agents
from evolve_ai.services import template as template_service
from evolve_ai.services.files import fsync_dir
from evolve_ai.services.store import Store
from evolve_ai.services.workspace import Workspace
from evolve_ai.workers.build import BuildFailed, BuildRequest, build_chunk, prepare

FORMAT = 1
MANIFEST = "MANIFEST.json"
STORE = "evolve.db"
CONFIG = "evolve.toml"
MAX_MEMBER = 1 << 34  # bytes: a member larger than this is no archive of ours
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
        generation = store.generation()
        living = len(store.living_ids())
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
                  key=lambda p: AUTOMATIC.fullmatch(p.name).group(2))  # type: ignore[union-attr]
    doomed = ours[:-keep] if keep else ours
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


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
    """Make ``workspace`` (an empty or missing directory) from the archive: its files,
    checked against the manifest first, then every living agent's directory built
    from its template version and genome. A life cycle there resumes."""
    root = workspace.root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise EvolveError(f"{root} is not empty: restore into an empty directory")
    contents = _read(archive_path)
    manifest = json.loads(contents.pop(MANIFEST))
    made_root = not root.exists()
    try:
        for name, data in contents.items():
            target = _place(workspace, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        workspace.ensure_layout()
        with Store.open(workspace.db_path) as store:
            store.check_integrity()
            rows = store.agents("living")
            _rebuild(workspace, rows, store, workers)
    except BaseException:
        _undo(root, made_root)
        raise
    size = archive_path.stat().st_size
    return Backup(archive_path, int(manifest.get("generation", 0)), len(rows), size)


def _place(workspace: Workspace, name: str) -> Path:
    """Where an archive member goes in a workspace."""
    if name == STORE:
        return workspace.db_path
    if name.startswith("templates/"):
        return workspace.versions_dir / name.removeprefix("templates/")
    return workspace.root / name  # evolve.toml, agent_template/...


def _undo(root: Path, made_root: bool) -> None:
    """A restore that failed leaves the directory as it found it: empty (or absent)."""
    if made_root:
        shutil.rmtree(root, ignore_errors=True)
        return
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _read(archive_path: Path) -> dict[str, bytes]:
    """Every member of the archive, checked against its manifest: or ArchiveError."""
    where = f"{archive_path} is not an intact evolve backup"
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            for member in archive:
                if not member.isfile() or not _safe(member.name) or member.size > MAX_MEMBER:
                    raise ArchiveError(f"{where}: unexpected member {member.name!r}")
                handle = archive.extractfile(member)
                if handle is None or member.name in contents:
                    raise ArchiveError(f"{where}: unexpected member {member.name!r}")
                contents[member.name] = handle.read()
    except FileNotFoundError:
        raise EvolveError(f"{archive_path}: no such file") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"{where} ({exc})") from None
    try:
        manifest = json.loads(contents[MANIFEST])
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
    except (KeyError, ValueError, TypeError):
        raise ArchiveError(f"{where}: no usable {MANIFEST}") from None
    listed = set(files)
    held = set(contents) - {MANIFEST}
    if listed != held or STORE not in held:
        missing = sorted(listed - held) or sorted({STORE} - held)
        raise ArchiveError(f"{where}: "
                           + (f"{missing[0]} is missing" if missing
                              else f"{sorted(held - listed)[0]} is not in the manifest"))
    for name in sorted(held):
        if hashlib.sha256(contents[name]).hexdigest() != files[name]:
            raise ArchiveError(f"{where}: {name} does not match its checksum")
    return contents


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


def export(workspace: Workspace, agent_id: str | None, destination: Path | None) -> Path:
    """One agent (``None``: the best measured active one) as a directory that runs on
    its own: ``cd DIR && PYTHONPATH=src python -m agent.main``."""
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
    return target
