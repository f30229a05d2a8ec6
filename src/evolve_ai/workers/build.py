"""Build agents in a staging directory: clone, genome, unique project name, wiring, hashes.

Runs in pool workers. The template is handed to each worker once (``prepare``)
and kept in memory, so building an agent is only writes: no re-reading, no
re-parsing of the template per agent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import tomlkit
import tomlkit.exceptions

from evolve_ai._linux import die_with_parent
from evolve_ai.core import genome as genome_codec
from evolve_ai.core import wiring
from evolve_ai.core.catalogue import Catalogue
from evolve_ai.core.fingerprint import code_hash, hash_bytes
from evolve_ai.errors import GenomeError, TemplateError
from evolve_ai.workers import ignore_interrupts

PYPROJECT = "pyproject.toml"
_NAME_SENTINEL = "evolve-agent-name-placeholder-7f3c"


@dataclass(frozen=True, slots=True)
class BuildRequest:
    agent_id: str
    genome: bytes  # canonical genome bytes, already validated


@dataclass(frozen=True, slots=True)
class BuiltAgent:
    agent_id: str
    genome_hash: str
    code_hash: str
    active_files: int
    total_files: int
    active_functions: int
    total_functions: int


@dataclass(frozen=True, slots=True)
class BuildFailed:
    """An agent that could not be built (e.g. its genome names a gene the template lost)."""

    agent_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Prepared:
    files: dict[str, bytes]  # template files but pyproject.toml
    directories: tuple[str, ...]  # every directory to create, parents first
    source_hashes: dict[str, str]  # digests of the template's src/ files
    pyproject: str | None  # pyproject text with the name sentinel
    catalogue: Catalogue


_prepared: _Prepared | None = None


def prepare(files: dict[str, bytes], catalogue: Catalogue) -> None:
    """Pool initializer: keep the template in this worker's memory."""
    global _prepared
    pyproject = files.get(PYPROJECT)
    body = {path: data for path, data in files.items() if path != PYPROJECT}
    directories = {"src/agent"}
    for path in body:
        parts = path.split("/")[:-1]
        directories.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    _prepared = _Prepared(
        files=body,
        directories=tuple(sorted(directories, key=lambda d: (d.count("/"), d))),
        source_hashes={p: hash_bytes(d) for p, d in body.items() if p.startswith("src/")},
        pyproject=None if pyproject is None else named_pyproject(pyproject),
        catalogue=catalogue,
    )


def worker_init(files: dict[str, bytes], catalogue: Catalogue) -> None:
    """Pool initializer: die with the orchestrator (even on kill -9), leave Ctrl-C to
    it, then ``prepare``."""
    die_with_parent()
    ignore_interrupts()
    prepare(files, catalogue)


def named_pyproject(data: bytes) -> str:
    """The template's pyproject with ``[project] name`` set to a sentinel (formatting kept).

    Parsing once and substituting the sentinel per agent keeps tomlkit's
    round-trip formatting at the cost of one parse per worker, not per agent.
    """
    try:
        document = tomlkit.parse(data.decode("utf-8"))
    except (tomlkit.exceptions.ParseError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{PYPROJECT}: not valid TOML: {exc}") from None
    project = document.get("project")
    if project is None:
        document.add("project", tomlkit.table())
        project = document["project"]
    if not isinstance(project, dict):
        raise TemplateError(f"{PYPROJECT}: [project] must be a table")
    project["name"] = _NAME_SENTINEL
    text = tomlkit.dumps(document)
    if text.count(_NAME_SENTINEL) != 1:
        raise TemplateError(f"{PYPROJECT}: cannot set a unique [project] name")
    return text


def agent_pyproject(named: str, agent_id: str) -> bytes:
    """An agent's own pyproject.toml, from ``named_pyproject``'s text."""
    return named.replace(_NAME_SENTINEL, f"agent-{agent_id}").encode()


def build_chunk(staging: str, requests: list[BuildRequest]) -> list[BuiltAgent | BuildFailed]:
    """Build each requested agent under ``staging/<id>``; nothing is synced here.

    The caller issues one filesystem barrier for the whole batch before the
    agents are moved into place and listed. A refused genome fails its agent only.
    """
    if _prepared is None:
        raise RuntimeError("build worker used before prepare()")
    results: list[BuiltAgent | BuildFailed] = []
    for request in requests:
        try:
            results.append(_build_one(_prepared, Path(staging) / request.agent_id, request))
        except GenomeError as exc:
            results.append(BuildFailed(request.agent_id, str(exc)))
    return results


def _build_one(prepared: _Prepared, root: Path, request: BuildRequest) -> BuiltAgent:
    genome = genome_codec.decode(request.genome, prepared.catalogue)
    os.mkdir(root)
    for directory in prepared.directories:
        os.mkdir(root / directory)
    for path, data in prepared.files.items():
        _write(root / path, data)
    if prepared.pyproject is not None:
        _write(root / PYPROJECT, agent_pyproject(prepared.pyproject, request.agent_id))
    _write(root / "genome.bin", request.genome)
    sources = dict(prepared.source_hashes)
    for path, data in wiring.render(genome, prepared.catalogue).items():
        _write(root / path, data)
        sources[path] = hash_bytes(data)
    genome_digest = hash_bytes(request.genome)
    expressed = genome.expressed(prepared.catalogue)
    return BuiltAgent(
        agent_id=request.agent_id,
        genome_hash=genome_digest,
        code_hash=code_hash(sources, genome_digest),
        active_files=len(expressed),
        total_files=len(prepared.catalogue.files),
        active_functions=sum(len(names) for _, names in expressed),
        total_functions=prepared.catalogue.gene_count,
    )


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
