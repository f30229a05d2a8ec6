"""``initiate_project()``: add N agents to a workspace, creating the workspace if needed.

Agents are built on a process pool into ``workspace/staging/``, flushed to disk
with one barrier, moved into ``agents/``, and only then listed in the registry
in one transaction. A kill at any point leaves no half-made agent listed; the
debris is removed by the next command that takes the lock.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from evolve_ai.core import genome as genome_codec
from evolve_ai.core.catalogue import Catalogue
from evolve_ai.core.fingerprint import hash_bytes
from evolve_ai.core.records import AgentRecord, Event
from evolve_ai.errors import EvolveError, TemplateError
from evolve_ai.operations import MAX_AGENTS_PER_INIT
from evolve_ai.services import config as config_service
from evolve_ai.services import logs
from evolve_ai.services import template as template_service
from evolve_ai.services.files import atomic_write, fsync_dir, sync_filesystem
from evolve_ai.services.registry import Registry
from evolve_ai.services.workspace import Workspace
from evolve_ai.workers.build import (
    BuildRequest,
    BuiltAgent,
    build_chunk,
    prepare,
    worker_init,
)

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class InitResult:
    created: tuple[str, ...]
    total_living: int
    seconds: float
    template_fingerprint: str


def initiate_project(
    workspace: Workspace,
    count: int,
    *,
    template: Path | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> InitResult:
    """Add ``count`` agents to ``workspace`` (see the module docstring)."""
    if not 1 <= count <= MAX_AGENTS_PER_INIT:
        raise EvolveError(f"the number of agents must be between 1 and {MAX_AGENTS_PER_INIT}")
    started = time.monotonic()
    first_init = not workspace.config_path.exists()
    # Everything that can be refused is checked before anything is created.
    config = config_service.load(workspace.config_path)
    files, catalogue = _choose_template(workspace, template)
    workspace.ensure_layout()
    with workspace.lock("init"):
        logs.attach_file(workspace.events_log)
        log = logs.get_logger(command="init")
        if first_init:
            atomic_write(workspace.config_path, config_service.render_default().encode())
        if not workspace.template_dir.exists():
            template_service.install(files, workspace.template_dir)
        template_service.publish_catalogue(catalogue, workspace.commons_dir)
        with Registry.open(workspace.db_path, create=True) as registry:
            removed = workspace.clean_debris(registry.living_ids())
            if removed:
                log.info("debris_removed", entries=removed)
            requests = _requests(catalogue, count, seed, registry.agents_ever())
            staging, built = _build_all(workspace, files, catalogue, requests,
                                        workers or config.workers, config.lifecycle.chunk_size,
                                        progress)
            records, events = _records(built, registry.generation())
            _move_into_place(workspace, staging, built)
            registry.add_agents(records, [(r.genome_hash, r.genome) for r in requests], events)
            total = len(registry.living_ids())
        _append_init_log(workspace, built)
        for event in events:
            log.info(event.kind, agent=event.agent, **dict(event.data))
        elapsed = time.monotonic() - started
        log.info("init_done", created=len(built), living=total, seconds=round(elapsed, 3),
                 template=catalogue.fingerprint)
    return InitResult(tuple(b.agent_id for b in built), total, elapsed, catalogue.fingerprint)


@dataclass(frozen=True, slots=True)
class _Request:
    agent_id: str
    genome: bytes
    genome_hash: str


def _choose_template(
    workspace: Workspace, template: Path | None
) -> tuple[dict[str, bytes], Catalogue]:
    """The template to clone: --template, else the workspace's, else the bundled one."""
    if template is not None:
        files, catalogue = template_service.load(template)
        if workspace.template_dir.exists():
            _, current = template_service.load(workspace.template_dir)
            if current.fingerprint != catalogue.fingerprint:
                raise TemplateError(
                    f"--template {template} differs from the workspace's "
                    f"{workspace.template_dir}; edit that one to change the template"
                )
        return files, catalogue
    if workspace.template_dir.exists():
        return template_service.load(workspace.template_dir)
    return template_service.load(template_service.bundled_template())


def _requests(catalogue: Catalogue, count: int, seed: int | None, offset: int) -> list[_Request]:
    """Ids and genomes, drawn from one generator per agent ordinal.

    Per-ordinal generators make ``--seed`` reproducible whatever the chunking,
    and a second init with the same seed continues instead of repeating.
    """
    base = seed if seed is not None else random.SystemRandom().getrandbits(128)
    requests = []
    for ordinal in range(offset, offset + count):
        rng = random.Random(f"evolve:{base}:{ordinal}")
        agent_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        data = genome_codec.encode(genome_codec.random_genome(catalogue, rng))
        requests.append(_Request(agent_id, data, hash_bytes(data)))
    return requests


def _build_all(
    workspace: Workspace,
    files: dict[str, bytes],
    catalogue: Catalogue,
    requests: list[_Request],
    workers: int,
    chunk_size: int,
    progress: Progress | None,
) -> tuple[Path, list[BuiltAgent]]:
    staging = workspace.staging_dir / f"init-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    chunks = [
        [BuildRequest(r.agent_id, r.genome) for r in requests[i : i + chunk_size]]
        for i in range(0, len(requests), chunk_size)
    ]
    built: list[BuiltAgent] = []
    for done in _run_chunks(files, catalogue, str(staging), chunks, workers):
        built.extend(done)
        if progress is not None:
            progress(len(done))
    sync_filesystem(staging)
    order = {r.agent_id: i for i, r in enumerate(requests)}
    built.sort(key=lambda b: order[b.agent_id])
    return staging, built


def _run_chunks(
    files: dict[str, bytes],
    catalogue: Catalogue,
    staging: str,
    chunks: list[list[BuildRequest]],
    workers: int,
) -> Iterator[list[BuiltAgent]]:
    if workers <= 1 or len(chunks) == 1:
        prepare(files, catalogue)
        for chunk in chunks:
            yield build_chunk(staging, chunk)
        return
    # fork: the pool starts in milliseconds and inherits nothing it can misuse
    # (the registry is opened but never touched by workers).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context,
                             initializer=worker_init, initargs=(files, catalogue)) as pool:
        futures: list[Future[list[BuiltAgent]]] = [
            pool.submit(build_chunk, staging, chunk) for chunk in chunks
        ]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _records(built: list[BuiltAgent], generation: int) -> tuple[list[AgentRecord], list[Event]]:
    now = time.time()
    records = [
        AgentRecord(id=b.agent_id, status="active", generation=generation, parent=None,
                    genome_hash=b.genome_hash, code_hash=b.code_hash, created=now,
                    active_files=b.active_files, active_functions=b.active_functions)
        for b in built
    ]
    events = [
        Event(kind="created", time=now, agent=b.agent_id,
              data=(("genome_hash", b.genome_hash), ("code_hash", b.code_hash),
                    ("active_files", b.active_files), ("active_functions", b.active_functions)))
        for b in built
    ]
    return records, events


def _move_into_place(workspace: Workspace, staging: Path, built: list[BuiltAgent]) -> None:
    """Rename each finished agent into ``agents/``; durable before it is listed."""
    for agent in built:
        os.rename(staging / agent.agent_id, workspace.agent_dir(agent.agent_id))
    fsync_dir(workspace.agents_dir)
    staging.rmdir()


def _append_init_log(workspace: Workspace, built: list[BuiltAgent]) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = "".join(
        f"{stamp} {b.agent_id} files {b.active_files}/{b.total_files} "
        f"functions {b.active_functions}/{b.total_functions} code {b.code_hash}\n"
        for b in built
    )
    with workspace.init_log.open("a", encoding="utf-8") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())
