"""Stages 2-3 of a pass: every active agent scanned, validated against its template
version and synced on the pool, and what the scan found applied to the population."""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from evolve_ai.core import genome as genome_codec
from evolve_ai.core.records import Status
from evolve_ai.operations.population import LiveAgent, Population
from evolve_ai.services import logs
from evolve_ai.services.config import Config
from evolve_ai.services.store import Store
from evolve_ai.services.supervisor import Supervisor
from evolve_ai.services.workspace import Workspace
from evolve_ai.workers.scan import ScanContext, ScanInput, ScanResult, scan_chunk


class Scanner:
    def __init__(self, workspace: Workspace, population: Population, supervisor: Supervisor,
                 pycache: Path, config: Config) -> None:
        self.workspace = workspace
        self.config = config
        self.population = population
        self.supervisor = supervisor
        self.pycache = pycache
        self.log = logs.get_logger(command="life-cycle")

    def scan(self, pool: ProcessPoolExecutor | None) -> list[ScanResult]:
        """Scan every active agent, in chunks on ``pool`` when there is more than one."""
        assert self.population.template is not None
        limits = self.config.limits
        versions = {fp: t.catalogue for fp, t in self.population.versions.items()}
        context = ScanContext(self.population.template.catalogue, str(self.pycache),
                              limits.disk_mb << 20, limits.files, versions)
        inputs = [
            ScanInput(a.id, str(self.workspace.agent_dir(a.id)), a.genome_hash, a.code_hash,
                      a.stats, a.template)
            for a in self.population.active()
        ]
        size = self.config.lifecycle.chunk_size
        chunks = [inputs[i: i + size] for i in range(0, len(inputs), size)]
        if pool is None or len(chunks) <= 1:
            return [r for chunk in chunks for r in scan_chunk(context, chunk)]
        futures: list[Future[list[ScanResult]]] = []
        for chunk in chunks:
            future = pool.submit(scan_chunk, context, chunk)
            future.add_done_callback(lambda _: self.supervisor.wake())
            futures.append(future)
        # Serve the agents' pipes while the pool works, so exits are noticed at once.
        while not all(f.done() for f in futures):
            self.supervisor.wait(0.05)
        return [r for f in futures for r in f.result()]

    def apply(self, results: list[ScanResult], store: Store, now: float) -> None:
        """Statuses, new genomes, code changes (a restart) and metrics, from the scan."""
        for result in results:
            agent = self.population.agents[result.agent_id]
            agent.stats = result.stats
            if result.outcome != "ok":
                self.set_status(agent, result.outcome, result.reason, now)
                continue
            if result.genome_changed and result.genome is not None:
                self._new_genome(agent, result, store)
            if result.code_changed:
                agent.code_hash = result.code_hash or agent.code_hash
                agent.needs_restart = True
                agent.dirty = True
            if result.metrics is not None:
                m = result.metrics
                values = (m.active_files, m.active_functions, m.lines, m.complexity, m.mutations)
                if values != (agent.active_files, agent.active_functions, agent.lines,
                              agent.complexity, agent.mutations):
                    (agent.active_files, agent.active_functions, agent.lines,
                     agent.complexity, agent.mutations) = values
                    agent.dirty = True

    def set_status(self, agent: LiveAgent, status: Status, reason: str | None,
                   now: float) -> None:
        if agent.status == status:
            return
        agent.status, agent.reason, agent.dirty = status, reason, True
        self.population.event(status, agent.id, reason=reason, level="warning")
        self.supervisor.stop(agent.id, status, now)
        agent.pending.clear()

    def _new_genome(self, agent: LiveAgent, result: ScanResult, store: Store) -> None:
        assert result.genome is not None and result.genome_hash is not None
        assert self.population.template is not None
        old = store.genome_bytes(agent.genome_hash)
        version = self.population.versions.get(agent.template or "", self.population.template)
        changed = genome_codec.changed_genes(old, result.genome, version.catalogue)
        self.population.new_genomes[result.genome_hash] = result.genome
        agent.genome_hash = result.genome_hash
        # A new variant is scored afresh: its window starts empty, and the previous
        # variant's fitness says nothing about it. Until its first batch of answers it
        # has no fitness: selection spares it but never copies it, and no mean counts it.
        agent.scores.clear()
        agent.fitness, agent.measured = None, 0
        agent.dirty = True
        self.population.event("mutated", agent.id, genome_hash=result.genome_hash,
                              genes=list(changed[:50]), changed=len(changed))
        agent.unmeasured_rewrites += 1
        if agent.unmeasured_rewrites > self.config.selection.unmeasured_rewrites:
            # An agent that rewrites itself faster than it can be measured would never
            # be judged, and so never die: it is judged as worthless until it is measured.
            agent.fitness, agent.measured = 0.0, self.config.evaluation.window
            self.population.event("limit", agent.id, what="unmeasured_rewrites",
                                  value=agent.unmeasured_rewrites, level="warning")
