"""The one way agents are made, for ``init`` and for births alike.

Build in a private staging directory, flush with one filesystem barrier, rename each
complete agent into ``agents/``, flush the directory, and only then hand back the
rows for the caller to list in one transaction. A kill at any point leaves no
half-made agent listed; what it leaves in staging is debris for the next command.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from evolve_ai.core.catalogue import Catalogue
from evolve_ai.core.records import AgentRow
from evolve_ai.errors import EvolveError
from evolve_ai.services.files import fsync_dir, sync_filesystem
from evolve_ai.services.workspace import Workspace
from evolve_ai.workers.build import (
    BuildFailed,
    BuildRequest,
    BuiltAgent,
    build_chunk,
    prepare,
    worker_init,
)

Progress = Callable[[int], None]


class BuildError(EvolveError):
    """Agents asked for all at once could not all be built; none was made."""


@dataclass(frozen=True, slots=True)
class Template:
    """A template as loaded: its files (relative path -> bytes) and their catalogue."""

    files: Mapping[str, bytes]
    catalogue: Catalogue


@dataclass(frozen=True, slots=True)
class Made:
    """What ``make_agents`` produced, in request order."""

    built: tuple[BuiltAgent, ...]
    rows: tuple[AgentRow, ...]  # to list, in the caller's transaction
    failed: tuple[BuildFailed, ...]


def make_agents(
    workspace: Workspace,
    template: Template,
    requests: Sequence[BuildRequest],
    *,
    label: str,
    generation: int,
    parents: Mapping[str, str] | None = None,
    all_or_nothing: bool = False,
    workers: int = 1,
    chunk_size: int = 100,
    progress: Progress | None = None,
) -> Made:
    """Build ``requests`` and move them into ``agents/``; ``parents`` maps child to parent.

    ``label`` names the staging directory (``init``, ``birth``), for whoever finds it.
    ``all_or_nothing``: one agent that cannot be built fails them all, before any is
    moved into ``agents/`` (BuildError); else the failures are returned in ``failed``.
    """
    staging = workspace.staging_dir / f"{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        chunks = [list(requests[i: i + chunk_size])
                  for i in range(0, len(requests), chunk_size)]
        results: list[BuiltAgent | BuildFailed] = []
        for done in _build(template, str(staging), chunks, workers):
            results.extend(done)
            if progress is not None:
                progress(len(done))
        order = {r.agent_id: i for i, r in enumerate(requests)}
        results.sort(key=lambda r: order[r.agent_id])
        built = tuple(r for r in results if isinstance(r, BuiltAgent))
        failed = tuple(r for r in results if isinstance(r, BuildFailed))
        if failed and all_or_nothing:
            raise BuildError(f"agent {failed[0].agent_id} cannot be built: {failed[0].reason}")
        sync_filesystem(staging)
        for agent in built:
            os.rename(staging / agent.agent_id, workspace.agent_dir(agent.agent_id))
        fsync_dir(workspace.agents_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    now = time.time()
    parents = parents or {}
    rows = tuple(AgentRow(
        id=b.agent_id, status="active", generation=generation, parent=parents.get(b.agent_id),
        genome_hash=b.genome_hash, code_hash=b.code_hash, created=now, updated=now,
        active_files=b.active_files, active_functions=b.active_functions,
        template=template.catalogue.fingerprint) for b in built)
    return Made(built, rows, failed)


def _build(template: Template, staging: str, chunks: list[list[BuildRequest]],
           workers: int) -> Iterator[list[BuiltAgent | BuildFailed]]:
    files = dict(template.files)
    if workers <= 1 or len(chunks) <= 1:
        prepare(files, template.catalogue)
        for chunk in chunks:
            yield build_chunk(staging, chunk)
        return
    # fork: the pool starts in milliseconds and inherits nothing it can misuse
    # (the store is opened but never touched by workers).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context,
                             initializer=worker_init,
                             initargs=(files, template.catalogue)) as pool:
        futures: list[Future[list[BuiltAgent | BuildFailed]]] = [
            pool.submit(build_chunk, staging, chunk) for chunk in chunks
        ]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
