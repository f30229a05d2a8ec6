"""Stage 7 of a pass: a generation closes once it has run ``selection.every`` passes
and every runnable agent has been measured (or a deadline passed). Selection decides
who dies, offspring fill the freed places, the best genomes are published to the
commons; dead agents' directories are removed once their process is gone. Below
``population.min`` runnable agents, the population is reseeded (or the life cycle
stops): never a life cycle running with nobody."""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Sequence

from evolve_ai.core import genome as genome_codec
from evolve_ai.core.records import AgentRow, GenerationDetail, GenerationRow
from evolve_ai.core.selection import Individual, Params, Strategy, decide
from evolve_ai.errors import EvolveError
from evolve_ai.operations.making import make_agents
from evolve_ai.operations.population import LiveAgent, Population
from evolve_ai.services import logs
from evolve_ai.services.config import Config
from evolve_ai.services.files import Shredder, atomic_write
from evolve_ai.services.store import Store
from evolve_ai.services.supervisor import Supervisor
from evolve_ai.services.workspace import Workspace
from evolve_ai.workers.build import BuildRequest


class Extinct(EvolveError):
    """The runnable population fell below ``population.min``, and the settings say stop."""


class Generations:
    def __init__(self, workspace: Workspace, config: Config, population: Population,
                 supervisor: Supervisor, strategy: Strategy, rng: random.Random) -> None:
        self.workspace = workspace
        self.config = config
        self.population = population
        self.supervisor = supervisor
        self.strategy = strategy
        self.rng = rng  # selection's own stream: deaths, parents, child ids
        self.closed = 0  # generations closed by this run
        self._passes = 0  # passes run in the open generation
        self._opened = time.monotonic()  # when it opened
        self._reseeded = -1  # the generation of the last reseeding
        # Each agent's evaluations when the open generation opened (None: not yet).
        self._base: dict[str, int] | None = None
        self._scored = 0  # the population's tasks scored when this generation opened
        self.log = logs.get_logger(command="life-cycle")
        self._doomed: set[str] = set()  # dead, directory not yet removed
        self._shredder = Shredder()
        # (catalogue, genome hash) -> its genes on: a genome means other genes in another
        # template version.
        self._expressed: dict[tuple[str, str], frozenset[str]] = {}

    def due(self, now: float) -> bool:
        """Count a pass; whether the generation may close: ``selection.every`` passes run
        and every runnable agent evaluated ``min_evaluations`` times in this generation,
        or its deadline passed. (An agent whose genome changed meanwhile may still have
        no fitness: selection spares it, as it spares the unmeasured.)"""
        if self._base is None:  # the first generation of this run opens now
            self._base = {a.id: a.evaluations for a in self.population.agents.values()}
        self._passes += 1
        if self._passes < self.config.selection.every:
            return False
        active = self.population.active()
        need = self._min_evaluations()
        base, rewrites = self._base, self.config.selection.unmeasured_rewrites
        # One that rewrites itself faster than it can be measured is judged at 0 already.
        unmeasured = sum(1 for a in active if a.evaluations - base.get(a.id, 0) < need
                         and a.unmeasured_rewrites <= rewrites)
        if not unmeasured:
            return True
        if now - self._opened < self.deadline(len(active)):
            return False
        self.log.info("generation_deadline", unmeasured=unmeasured,
                      seconds=round(now - self._opened, 3))
        return True

    def deadline(self, active: int) -> float:
        """Seconds a generation may wait for its agents' measurements: the passes it
        needs, as long as an unanswered task may last, for each turn of agents."""
        c = self.config
        turns = max(1, -(-active // c.lifecycle.max_running))
        per_pass = max(c.lifecycle.interval, c.evaluation.answer_timeout)
        passes = max(c.selection.every, c.lifecycle.turn_passes if turns > 1 else 0)
        return turns * (passes * per_pass + c.supervisor.hello_timeout)

    def guard(self, store: Store) -> list[AgentRow]:
        """Below ``population.min`` runnable agents: an ``extinction`` error, then fresh
        random founders from the newest version (at most once a generation); the births.
        Raises Extinct when ``population.on_extinction`` is ``stop``."""
        runnable = len(self.population.active())
        floor = self.config.population.floor
        if runnable >= floor:
            return []
        if self._reseeded == self.population.generation:
            return []  # reseeded already: wait for the generation to judge them
        self.population.event("extinction", None, runnable=runnable, min=floor,
                              level="error")
        if self.config.population.on_extinction == "stop":
            raise Extinct(f"the population is extinct: {runnable} runnable agents, below "
                          f"population.min {floor} (population.on_extinction = \"stop\")")
        self._reseeded = self.population.generation
        template = self.population.template
        if template is None:
            return []
        count = max(floor, self.config.population.size) - runnable
        requests = []
        for _ in range(count):
            genome = genome_codec.encode(genome_codec.random_genome(template.catalogue,
                                                                    self.rng))
            requests.append(BuildRequest(str(uuid.UUID(int=self.rng.getrandbits(128),
                                                       version=4)), genome))
        rows = self._admit(make_agents(self.workspace, template, requests, label="reseed",
                                       generation=self.population.generation).rows, "founded")
        self.population.event("reseeded", None, count=len(rows),
                              template=template.catalogue.fingerprint, level="warning")
        return rows

    def close(self, store: Store, now: float
              ) -> tuple[list[GenerationRow], list[AgentRow], list[GenerationDetail]]:
        """Select, let die, reproduce, publish the elite; the generation's row, births and
        detail (gene expression and fitness of the population as it was judged)."""
        population = self.population
        population.generation += 1
        self.closed += 1
        self._passes, self._opened = 0, now
        self._base = {a.id: a.evaluations for a in population.agents.values()}
        tasks, self._scored = population.scored - self._scored, population.scored
        living = population.living()
        judged = [a for a in living if a.status == "active" and a.fitness is not None]
        fitness = [a.fitness for a in judged if a.fitness is not None]
        detail = GenerationDetail(
            population.generation, self._shares(store, [a for a in living
                                                        if a.status == "active"]),
            tuple((a.id, a.fitness) for a in judged if a.fitness is not None))
        decision = decide(self.strategy, [
            Individual(a.id, a.fitness, a.measured, a.status == "active",
                       a.idle_generations, a.energy) for a in living
        ], self.params(), self.rng)
        for agent_id, level in decision.energies:
            agent = population.agents[agent_id]
            agent.energy, agent.dirty = level, True
        for agent_id in decision.deaths:
            self._die(population.agents[agent_id], now)
        for agent in living:
            if agent.status in ("disabled", "quarantined"):
                agent.idle_generations += 1
                agent.dirty = True
        births = self._reproduce(decision.parents, store)
        self._publish_elite(store)
        mean = sum(fitness) / len(fitness) if fitness else None
        row = GenerationRow(
            generation=population.generation,
            mean=mean,
            max=max(fitness) if fitness else None,
            population=len(population.living()),
            births=len(births),
            deaths=len(decision.deaths),
            min=min(fitness) if fitness else None,
            sd=(None if mean is None else
                (sum((f - mean) ** 2 for f in fitness) / len(fitness)) ** 0.5),
            tasks=tasks,
        )
        population.event("generation", None, **row._asdict())
        return [row], births, [detail]

    def _shares(self, store: Store, active: Sequence[LiveAgent]
                ) -> tuple[tuple[str, float], ...]:
        """Each function gene of the newest template version: the share of ``active``
        expressing it. Genomes are decoded once per content (most outlive a generation)."""
        template = self.population.template
        if template is None or not active:
            return ()
        catalogue = template.catalogue
        if len(self._expressed) > 4 * len(active):  # bounded: forget genomes gone by
            self._expressed.clear()
        counts: dict[str, int] = {}
        for agent in active:
            key = (catalogue.fingerprint, agent.genome_hash)
            genes = self._expressed.get(key)
            if genes is None:
                data = (self.population.new_genomes.get(agent.genome_hash)
                        or store.genome_bytes(agent.genome_hash))
                try:
                    decoded = None if data is None else genome_codec.decode(data, catalogue)
                except EvolveError:  # a genome of another version: nothing expressed here
                    decoded = None
                genes = frozenset(g for g in genome_codec.expression(decoded, catalogue)
                                  if ":" in g)
                self._expressed[key] = genes
            for gene in genes:
                counts[gene] = counts.get(gene, 0) + 1
        every = sorted(f"{path}:{name}" for path, names in catalogue.genes().items()
                       for name in names)
        return tuple((gene, counts.get(gene, 0) / len(active)) for gene in every)

    def params(self) -> Params:
        s = self.config.selection
        return Params(population_size=self.config.population.size, survival=s.survival,
                      elite=s.elite, tournament_size=s.tournament_size, threshold=s.threshold,
                      min_evaluations=self._min_evaluations(), grace=s.grace,
                      metabolism=s.metabolism)

    def bury(self) -> list[str]:
        """Remove the directories of dead agents whose process has ended; their ids."""
        buried = []
        for agent_id in list(self._doomed):
            if self.supervisor.has_process(agent_id):
                continue
            directory = self.workspace.agent_dir(agent_id)
            trash = self.workspace.trash_dir
            self._shredder.discard(directory, trash)
            # its compiled modules too (the pycache mirrors absolute source paths)
            self._shredder.discard(self.workspace.pycache_dir / str(directory).lstrip(os.sep),
                                   trash)
            for log in (f"{agent_id}.log", f"{agent_id}.log.1"):  # its captured output
                (self.workspace.agent_logs_dir / log).unlink(missing_ok=True)
            self._doomed.discard(agent_id)
            self.population.agents.pop(agent_id, None)
            self.supervisor.forget(agent_id)
            buried.append(agent_id)
        return buried

    def close_shredder(self) -> None:
        self._shredder.close()

    def _min_evaluations(self) -> int:
        # a window is all a variant's fitness can ever rest on
        return min(self.config.selection.min_evaluations, self.config.evaluation.window)

    def _die(self, agent: LiveAgent, now: float) -> None:
        """Selection's verdict: stop, mark dead, remove the directory once the process is gone."""
        was = agent.status
        agent.status, agent.dirty = "dead", True
        agent.reason = "selected against" if was == "active" else f"{was} past its grace"
        agent.pending.clear()
        self.supervisor.stop(agent.id, "died", now)
        self._doomed.add(agent.id)
        self.population.event("died", agent.id, fitness=agent.fitness, reason=agent.reason,
                              generation=self.population.generation)

    def _reproduce(self, parents: Sequence[str], store: Store) -> list[AgentRow]:
        """Offspring: new id, the parent's genome copied, made like init's agents."""
        template = self.population.template
        if not parents or template is None:
            return []
        requests, parent_of = [], {}
        for parent_id in parents:
            genome = self.population.genome(self.population.agents[parent_id].genome_hash, store)
            if genome is None:
                continue
            child = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            requests.append(BuildRequest(child, genome))
            parent_of[child] = parent_id
        made = make_agents(self.workspace, template, requests, label="birth",
                           generation=self.population.generation, parents=parent_of)
        for failed in made.failed:  # the template dropped a gene the parent carries
            self.log.warning("birth_failed", parent=parent_of[failed.agent_id],
                             error=failed.reason)
        return self._admit(made.rows, "born")

    def _admit(self, rows: Sequence[AgentRow], kind: str) -> list[AgentRow]:
        """New agents made this pass join the population, each with a ``kind`` event."""
        for row in rows:
            self.population.agents[row.id] = LiveAgent(
                id=row.id, status="active", reason=None, genome_hash=row.genome_hash,
                code_hash=row.code_hash, active_files=row.active_files,
                active_functions=row.active_functions, template=row.template)
            self.population.event(kind, row.id, parent=row.parent,
                                  generation=self.population.generation,
                                  genome_hash=row.genome_hash, template=row.template)
        return list(rows)

    def _publish_elite(self, store: Store) -> None:
        """The best genomes, as ``commons/elite/<rank>.bin``, for agents to recombine with."""
        count = self.config.selection.publish_elite
        enough = max(1, self._min_evaluations())
        ranked = sorted((a for a in self.population.active()
                         if a.fitness is not None and a.measured >= enough),
                        key=lambda a: (-(a.fitness or 0.0), a.id))[:count]
        directory = self.workspace.commons_dir / "elite"
        directory.mkdir(parents=True, exist_ok=True)
        for rank, agent in enumerate(ranked):
            data = self.population.genome(agent.genome_hash, store)
            if data is not None:
                atomic_write(directory / f"{rank}.bin", data, durable=False)
        for stale in directory.glob("*.bin"):
            if not stale.stem.isdigit() or int(stale.stem) >= len(ranked):
                stale.unlink(missing_ok=True)
