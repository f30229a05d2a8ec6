"""``initiate_project()``: add N agents to a workspace, creating the workspace if needed.

Agents are built on a process pool into ``workspace/staging/``, flushed to disk
with one barrier, moved into ``agents/``, and only then listed in the store
in one transaction. A kill at any point leaves no half-made agent listed; the
debris is removed by the next command that takes the lock.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from evolve_ai.core import genome as genome_codec
from evolve_ai.core.catalogue import Catalogue
from evolve_ai.core.fingerprint import hash_bytes
from evolve_ai.core.records import Event
from evolve_ai.errors import EvolveError, GenomeError, TemplateError
from evolve_ai.operations import MAX_AGENTS_PER_INIT
from evolve_ai.operations.making import Made, Progress, Template, make_agents
from evolve_ai.services import config as config_service
from evolve_ai.services import logs
from evolve_ai.services import template as template_service
from evolve_ai.services.files import atomic_write
from evolve_ai.services.store import Store
from evolve_ai.services.workspace import Workspace
from evolve_ai.workers.build import BuildRequest, BuiltAgent


@dataclass(frozen=True, slots=True)
class InitResult:
    created: tuple[str, ...]
    total_living: int
    seconds: float
    template_fingerprint: str
    population_size: int  # as evolve.toml now says
    previous_size: int | None  # None: this init made the workspace
    life_cycle: int | None  # the pid of the life cycle the agents were added beside


def initiate_project(
    workspace: Workspace,
    count: int,
    *,
    template: Path | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    from_genome: Path | None = None,
    from_agent: str | None = None,
) -> InitResult:
    """Add ``count`` agents to ``workspace`` (see the module docstring); founders from
    the genome in the file ``from_genome`` or of the agent ``from_agent``, else random.

    Beside a running life cycle, the agents are added and listed as usual, then the
    life cycle is told (SIGHUP) to re-read ``evolve.toml``: it takes them at its next
    pass. ``population.size`` becomes ``count`` at the first init, and grows by
    ``count`` at every later one.
    """
    if not 1 <= count <= MAX_AGENTS_PER_INIT:
        raise EvolveError(f"the number of agents must be between 1 and {MAX_AGENTS_PER_INIT}")
    started = time.monotonic()
    # Everything that can be refused is checked before anything is created.
    config = config_service.load(workspace.config_path)
    files, catalogue = _choose_template(workspace, template)
    founder = _founder_genome(workspace, catalogue, from_genome, from_agent)
    workspace.ensure_layout()
    with workspace.lock_for_init() as life_cycle:
        # Under the lock: an init that waited for another sees what that one made.
        first_init = not workspace.config_path.exists()
        config = config_service.load(workspace.config_path)
        logs.attach_file(workspace.events_log, config.logs.max_mb << 20, config.logs.files)
        log = logs.get_logger(command="init")
        if first_init:
            atomic_write(workspace.config_path, config_service.render_default().encode())
        if not workspace.template_dir.exists():
            template_service.install(files, workspace.template_dir)
        if life_cycle is None:  # a running life cycle publishes the newest version itself
            template_service.publish_catalogue(catalogue, workspace.commons_dir)
        # A store is made only for a population of nobody: an empty store beside agents
        # is one that was lost, and making it anew would read them all as debris.
        with Store.open(workspace.db_path, create=not workspace.has_agents()) as store:
            if life_cycle is None:  # else its debris is the life cycle's to judge
                logs.report_cleanup(workspace.clean_debris(store, by_init=True), workspace)
            template_service.keep_version(files, catalogue, workspace.versions_dir)
            store.add_template(catalogue.fingerprint, catalogue.genes(),
                               template_service.digests(files))
            requests = _requests(catalogue, count, seed, store.agents_ever(), founder)
            made = make_agents(workspace, Template(files, catalogue),
                               [BuildRequest(r.agent_id, r.genome) for r in requests],
                               label="init", generation=store.generation(),
                               all_or_nothing=True, workers=workers or config.workers,
                               chunk_size=config.lifecycle.chunk_size, progress=progress)
            events = _events(made)
            # The size first: a life cycle that takes the agents finds it already raised.
            previous = None if first_init else config.population.size
            size = count if previous is None else previous + count
            config_service.set_values(workspace.config_path, {"population.size": size})
            try:
                store.add_agents(made.rows, [(r.genome_hash, r.genome) for r in requests],
                                 events)
            except BaseException:
                config_service.set_values(workspace.config_path,
                                          {"population.size": previous or count})
                raise
            total = len(store.living_ids())
        built = list(made.built)
        _append_init_log(workspace, built)
        for event in events:
            log.info(event.kind, agent=event.agent, **dict(event.data))
        elapsed = time.monotonic() - started
        log.info("init_done", created=len(built), living=total, seconds=round(elapsed, 3),
                 template=catalogue.fingerprint, population_size=size,
                 beside_life_cycle=life_cycle)
        if life_cycle is not None and workspace.held_by(life_cycle):
            with contextlib.suppress(OSError):  # it re-reads evolve.toml at once
                os.kill(life_cycle, signal.SIGHUP)
    return InitResult(tuple(b.agent_id for b in built), total, elapsed, catalogue.fingerprint,
                      size, previous, life_cycle)


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


def _requests(catalogue: Catalogue, count: int, seed: int | None, offset: int,
              founder: bytes | None = None) -> list[_Request]:
    """Ids and genomes (``founder``'s for all, else random), drawn from one generator
    per agent ordinal.

    Per-ordinal generators make ``--seed`` reproducible whatever the chunking,
    and a second init with the same seed continues instead of repeating.
    """
    base = seed if seed is not None else random.SystemRandom().getrandbits(128)
    requests = []
    for ordinal in range(offset, offset + count):
        rng = random.Random(f"evolve:{base}:{ordinal}")
        agent_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        data = founder or genome_codec.encode(genome_codec.random_genome(catalogue, rng))
        requests.append(_Request(agent_id, data, hash_bytes(data)))
    return requests


def _founder_genome(workspace: Workspace, catalogue: Catalogue, path: Path | None,
                    agent: str | None) -> bytes | None:
    """The genome founders copy: read, checked against ``catalogue`` and made canonical."""
    if path is None and agent is None:
        return None
    if path is not None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EvolveError(f"--from-genome {path}: cannot be read: {exc.strerror}") from None
        where = f"--from-genome {path}"
    else:
        assert agent is not None
        if not workspace.db_path.exists():
            raise EvolveError(f"--from {agent}: {workspace.root} has no agents yet")
        with Store.open(workspace.db_path) as store:
            row = store.find(agent)
            stored = store.genome_bytes(row.genome_hash)
        if stored is None:
            raise EvolveError(f"--from {agent}: its genome is not in the store")
        data, where = stored, f"--from {row.id}"
    try:
        genome = genome_codec.decode(data, catalogue)
    except GenomeError as exc:
        raise EvolveError(f"{where}: not a genome of this template: {exc}") from None
    return genome_codec.encode(genome)


def _events(made: Made) -> list[Event]:
    now = time.time()
    return [
        Event(kind="created", time=now, agent=b.agent_id,
              data=(("genome_hash", b.genome_hash), ("code_hash", b.code_hash),
                    ("active_files", b.active_files), ("active_functions", b.active_functions)))
        for b in made.built
    ]


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
