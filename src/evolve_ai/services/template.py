"""The agent template on disk: where the bundled one lives, reading, installing, cataloguing."""

from __future__ import annotations

import importlib.resources
import os
import shutil
from pathlib import Path

import msgpack

from evolve_ai.core.catalogue import WIRING_PATHS, Catalogue, build_catalogue
from evolve_ai.core.fingerprint import hash_bytes
from evolve_ai.errors import TemplateError
from evolve_ai.services.files import atomic_write, fsync_dir, sync_filesystem

MAX_TEMPLATE_BYTES = 64 * 1024 * 1024
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".venv", ".mypy_cache", ".ruff_cache",
                          ".pytest_cache", "build", "dist"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def bundled_template() -> Path:
    """The default template: package data in a wheel, or the checkout's top-level copy."""
    packaged = Path(str(importlib.resources.files("evolve_ai") / "_template"))
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "agent_template"
    if checkout.is_dir():
        return checkout
    raise TemplateError("the bundled agent template is missing from this installation")


def read_template(directory: Path) -> dict[str, bytes]:
    """Every file of the template as relative path -> bytes (caches and wiring left out)."""
    if not directory.is_dir():
        raise TemplateError(f"template {directory} is not a directory")
    files: dict[str, bytes] = {}
    total = 0
    for current, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS
                             and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith(SKIPPED_SUFFIXES) or name == "genome.bin":
                continue
            path = Path(current) / name
            relative = path.relative_to(directory).as_posix()
            if relative in WIRING_PATHS:
                continue
            if not path.is_file():
                raise TemplateError(f"template {directory}: {relative} is not a regular file")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise TemplateError(
                    f"template {directory}: cannot read {relative}: {exc}"
                ) from None
            total += len(data)
            if total > MAX_TEMPLATE_BYTES:
                raise TemplateError(f"template {directory} is over {MAX_TEMPLATE_BYTES} bytes")
            files[relative] = data
    return files


def settled(directory: Path, seconds: float, now: float) -> bool:
    """Whether nothing in the template changed in the last ``seconds`` (files and
    directories, whose times change when a file is made, renamed or deleted): an
    editor saves a file in several writes, and a half-written one must not become a
    version."""
    newest = 0.0
    for current, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        for name in (".", *filenames):
            try:
                info = os.lstat(os.path.join(current, name))
            except OSError:
                return False  # it changes under our eyes
            newest = max(newest, info.st_mtime, info.st_ctime)
    return now - newest >= seconds


def load(directory: Path) -> tuple[dict[str, bytes], Catalogue]:
    """Read and catalogue a template; TemplateError names the template and the file."""
    files = read_template(directory)
    try:
        return files, build_catalogue(files)
    except TemplateError as exc:
        raise TemplateError(f"template {directory}: {exc}") from None


def install(files: dict[str, bytes], destination: Path) -> None:
    """Copy a read template to ``destination`` (built aside, then renamed into place)."""
    staging = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for relative, data in files.items():
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.replace(staging, destination)


def publish_catalogue(catalogue: Catalogue, commons: Path) -> None:
    """Write the catalogue where agents can read it (``workspace/commons/catalogue.msgpack``)."""
    commons.mkdir(parents=True, exist_ok=True)
    atomic_write(commons / "catalogue.msgpack",
                 msgpack.packb(catalogue.to_plain(), use_bin_type=True))


def keep_version(files: dict[str, bytes], catalogue: Catalogue, versions: Path) -> Path:
    """Keep a version's files under ``versions/<fingerprint>/``, once and for good."""
    destination = versions / catalogue.fingerprint
    if destination.is_dir():
        return destination
    versions.mkdir(parents=True, exist_ok=True)
    try:
        install(files, destination)
    except OSError:
        if not destination.is_dir():  # else another command kept it first
            raise
    sync_filesystem(destination)
    fsync_dir(versions)
    return destination


def load_version(versions: Path, fingerprint: str) -> tuple[dict[str, bytes], Catalogue]:
    """A kept version; TemplateError if it is missing or no longer what it was."""
    files, catalogue = load(versions / fingerprint)
    if catalogue.fingerprint != fingerprint:
        raise TemplateError(f"template version {fingerprint} was changed on disk")
    return files, catalogue


def digests(files: dict[str, bytes]) -> dict[str, str]:
    """Path -> digest of every file of a template, as the store records a version."""
    return {path: hash_bytes(data) for path, data in files.items()}
