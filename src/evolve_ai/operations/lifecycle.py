"""``LifeManager``: the life cycle (DESIGN §7), a foreground loop of passes.

Each pass: scan/validate/sync on the pool (stages 1-3), launch and restart
(4), send tasks (5), measure (6), close a generation every
``selection.every`` passes (7), then save everything in one SQLite
transaction and notify (8), then serve agent I/O until the next pass (9).
Signals only set flags (handled in ``_install_signals``); the loop acts on
them between stages.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import shutil
import signal
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from evolve_ai.core import genome as genome_codec
from evolve_ai.core.catalogue import Catalogue
from evolve_ai.core.records import AgentRecord, Event
from evolve_ai.core.selection import Individual, Params, Strategy, decide
from evolve_ai.core.selection.registry import BUILTIN
from evolve_ai.environments import Environment, Settings, Task, load_environment
from evolve_ai.errors import EvolveError
from evolve_ai.plugins import load_plugin
from evolve_ai.services import config as config_service
from evolve_ai.services import logs
from evolve_ai.services import template as template_service
from evolve_ai.services.config import Config
from evolve_ai.services.files import Shredder, atomic_write, fsync_dir, sync_filesystem
from evolve_ai.services.launcher import Launcher, LaunchSpec, Limits
from evolve_ai.services.notifier import Notifier
from evolve_ai.services.registry import Registry
from evolve_ai.services.supervisor import Supervisor, SupervisorSettings
from evolve_ai.services.workspace import Workspace
from evolve_ai.workers.build import BuildRequest, BuiltAgent, build_chunk, prepare
from evolve_ai.workers.scan import FileStat, ScanContext, ScanInput, ScanResult, scan_chunk

LOG_CAP = 1 << 20  # bytes of an agent's log kept before it is rotated at the next start


@dataclass(slots=True)
class Agent:
    """The life cycle's view of one living agent (the registry row, plus memory)."""

    id: str
    status: str
    reason: str | None
    genome_hash: str
    code_hash: str
    active_files: int = 0
    active_functions: int = 0
    lines: int = 0
    complexity: int = 0
    mutations: int = 0
    fitness: float | None = None  # of the current variant (genome); None until measured
    measured: int = 0  # scores behind ``fitness``: the current variant's, at most a window
    evaluations: int = 0  # every score of its life (shown, never used to select)
    energy: float = 1.0
    idle_generations: int = 0
    stats: tuple[FileStat, ...] | None = None
    scores: deque[float] = field(default_factory=deque)
    pending: dict[str, tuple[Task, float]] = field(default_factory=dict)
    needs_restart: bool = False
    dirty: bool = False


@dataclass(frozen=True, slots=True)
class RunOptions:
    once: bool = False
    generations: int | None = None
    seed: int | None = None


@dataclass(slots=True)
class RunSummary:
    passes: int = 0
    generations: int = 0  # the workspace's generation at the end
    generations_run: int = 0  # generations closed by this run
    stopped_by: str = ""


class LifeManager:
    def __init__(self, workspace: Workspace, config: Config, options: RunOptions) -> None:
        self.workspace = workspace
        self.config = config
        self.options = options
        self.log = logs.get_logger(command="life-cycle")
        # Separate streams: how many tasks were drawn never shifts a selection.
        self.rng = random.Random(f"tasks:{options.seed}" if options.seed is not None else None)
        self.select_rng = random.Random(
            f"select:{options.seed}" if options.seed is not None else None)
        self.doomed: set[str] = set()
        self.shredder = Shredder()
        self.agents: dict[str, Agent] = {}
        self.events: list[Event] = []
        self.new_genomes: dict[str, bytes] = {}
        self.passes = 0
        self.generation = 0
        self.generations_run = 0
        self.stop_reason: str | None = None
        self.reload_requested = False
        self.sandbox_reported = False
        self.catalogue: Catalogue | None = None
        self.environment: Environment = load_environment(
            config.environment, Settings(config.evaluation.energy_cost))
        self.strategy: Strategy = load_strategy(config.selection.strategy)
        self.notifier = Notifier(config.hooks, config.hook_timeout)
        self.supervisor = self._make_supervisor(config)
        self.pool: ProcessPoolExecutor | None = None
        self.pycache = workspace.state_dir / "pycache"

    # -- the loop ---------------------------------------------------------------

    def run(self) -> RunSummary:
        summary = RunSummary()
        with self._signals(), self._pool():
            with Registry.open(self.workspace.db_path) as registry:
                self._resume(registry)
                self.log.info("life_cycle_started", agents=len(self.agents),
                              generation=self.generation, seed=self.options.seed)
                try:
                    while self.stop_reason is None:
                        self._pass(registry)
                        summary.passes += 1
                        if self.options.once:
                            self._drain_answers()
                            self.stop_reason = "once"
                        elif (self.options.generations is not None
                              and self.generations_run >= self.options.generations):
                            self.stop_reason = "generations"
                        else:
                            self._serve(self.config.lifecycle.interval)
                        if self.reload_requested:
                            self._reload()
                finally:
                    self._shutdown(registry)
            summary.stopped_by = self.stop_reason or "error"
            summary.generations = self.generation
            summary.generations_run = self.generations_run
        return summary

    def _pass(self, registry: Registry) -> None:
        started = time.monotonic()
        self.passes += 1
        self._apply_supervisor_events()  # crashes and disablings seen while waiting
        self._refresh_catalogue()
        results = self._scan()
        self._apply_scan(results, registry)
        now = time.monotonic()
        self._schedule(now)
        self._report_sandbox()
        if self.options.once:
            self._await_hellos()
            now = time.monotonic()
        self._evaluate(now)
        self.supervisor.monitor(now)
        self._apply_supervisor_events()
        generations, births = self._close_generation(registry)
        self._save(registry, generations, births)
        self._bury()
        self.log.debug("pass_done", number=self.passes, seconds=round(time.monotonic() -
                                                                       started, 4),
                       running=len(self.supervisor.running()))

    # -- stage 1-3: scan, validate, sync on the pool -------------------------------

    def _refresh_catalogue(self) -> None:
        """Re-catalogue the template when it changed; every agent is then fully rescanned."""
        files, catalogue = template_service.load(self.workspace.template_dir)
        if self.catalogue is None or catalogue.fingerprint != self.catalogue.fingerprint:
            if self.catalogue is not None:
                self.log.info("template_changed", fingerprint=catalogue.fingerprint)
            self.catalogue = catalogue
            prepare(files, catalogue)  # births are built from this template
            template_service.publish_catalogue(catalogue, self.workspace.commons_dir)
            for agent in self.agents.values():
                agent.stats = None

    def _scan(self) -> list[ScanResult]:
        assert self.catalogue is not None
        context = ScanContext(self.catalogue, str(self.pycache))
        inputs = [
            ScanInput(a.id, str(self.workspace.agent_dir(a.id)), a.genome_hash, a.code_hash,
                      a.stats)
            for a in self.agents.values() if a.status == "active"
        ]
        size = self.config.lifecycle.chunk_size
        chunks = [inputs[i : i + size] for i in range(0, len(inputs), size)]
        if self.pool is None or len(chunks) <= 1:
            return [r for chunk in chunks for r in scan_chunk(context, chunk)]
        futures: list[Future[list[ScanResult]]] = []
        for chunk in chunks:
            future = self.pool.submit(scan_chunk, context, chunk)
            future.add_done_callback(lambda _: self.supervisor.wake())
            futures.append(future)
        # Serve the agents' pipes while the pool works, so exits are noticed at once.
        while not all(f.done() for f in futures):
            self.supervisor.wait(0.05)
        return [r for f in futures for r in f.result()]

    def _apply_scan(self, results: list[ScanResult], registry: Registry) -> None:
        now = time.monotonic()
        for result in results:
            agent = self.agents[result.agent_id]
            agent.stats = result.stats
            if result.outcome != "ok":
                self._set_status(agent, result.outcome, result.reason, now)
                continue
            if result.genome_changed and result.genome is not None:
                self._on_new_genome(agent, result, registry)
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

    def _on_new_genome(self, agent: Agent, result: ScanResult, registry: Registry) -> None:
        assert result.genome is not None and result.genome_hash is not None
        assert self.catalogue is not None
        old = registry.genome_bytes(agent.genome_hash)
        changed = _changed_genes(old, result.genome, self.catalogue)
        self.new_genomes[result.genome_hash] = result.genome
        agent.genome_hash = result.genome_hash
        # A new variant is scored afresh: its window starts empty, and the previous
        # variant's fitness says nothing about it. Until its first batch of answers it
        # has no fitness: selection spares it but never copies it, and no mean counts it.
        agent.scores.clear()
        agent.fitness, agent.measured = None, 0
        agent.dirty = True
        self._event("mutated", agent.id, genome_hash=result.genome_hash,
                    genes=list(changed[:50]), changed=len(changed))

    def _set_status(self, agent: Agent, status: str, reason: str | None, now: float) -> None:
        if agent.status == status:
            return
        agent.status, agent.reason, agent.dirty = status, reason, True
        self._event(status, agent.id, reason=reason, level="warning")
        self.supervisor.stop(agent.id, status, now)
        agent.pending.clear()

    # -- stage 4: launch and restart ----------------------------------------------

    def _schedule(self, now: float) -> None:
        sup = self.supervisor
        for agent in self.agents.values():
            proc = sup.agents.get(agent.id)
            if agent.needs_restart and proc is not None and proc.pid is not None:
                sup.stop(agent.id, "restart", now)
            elif agent.needs_restart:
                agent.needs_restart = False
        active = [a for a in self.agents.values() if a.status == "active"]
        limit = self.config.lifecycle.max_running
        if len(active) > limit:
            self._rotate_turns(limit, now)
        alive = len(sup.alive())
        waiting = [a for a in active if a.id not in sup.agents or (
            sup.agents[a.id].pid is None and sup.ready_to_restart(a.id, now))]
        # Longest waiting first; among those that never ran, the newest first (agents
        # are in birth order, and the sort is stable): births carry the genomes
        # selection chose, and behind 10,000 founders taking turns they would wait a
        # hundred passes before anyone measured them.
        waiting.reverse()
        waiting.sort(key=lambda a: sup.agents[a.id].last_ran if a.id in sup.agents else 0.0)
        for agent in waiting:
            if alive >= limit:
                break
            if self._launch(agent, now):
                alive += 1

    def _rotate_turns(self, limit: int, now: float) -> None:
        """Round robin above ``max_running``: agents whose turn is over make room.

        At most a ``1/turn_passes`` share of the places turns over in one pass, the
        longest-running first: agents started together would otherwise all stop in
        the same pass, leaving a pass with nobody running and a launch burst after it.
        """
        sup = self.supervisor
        turn_passes = self.config.lifecycle.turn_passes
        running = sup.running()
        for agent_id in running:
            sup.agents[agent_id].turns += 1
        # turns counts this pass too, whose tasks it will not get: ">" leaves it
        # turn_passes passes of tasks (with turn_passes 1, ">=" left it none).
        due = sorted((agent_id for agent_id in running
                      if sup.agents[agent_id].turns > turn_passes),
                     key=lambda agent_id: -sup.agents[agent_id].turns)
        for agent_id in due[:-(-limit // turn_passes)]:
            sup.stop(agent_id, "turn", now)

    def _launch(self, agent: Agent, now: float) -> bool:
        directory = self.workspace.agent_dir(agent.id)
        log_path = self.workspace.agent_logs_dir / f"{agent.id}.log"
        _rotate(log_path)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            started = self.supervisor.start(self._spec(agent.id, directory), fd, now)
        finally:
            os.close(fd)
        agent.needs_restart = False
        agent.pending.clear()
        return started

    def _spec(self, agent_id: str, directory: Path) -> LaunchSpec:
        limits = self.config.limits
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(directory),
            "PYTHONPATH": "src",
            "PYTHONDONTWRITEBYTECODE": "1",
            "EVOLVE_AGENT_ID": agent_id,
            "EVOLVE_COMMONS": str(self.workspace.commons_dir),
        }
        return LaunchSpec(
            agent_id=agent_id,
            cwd=str(directory),
            env=env,
            limits=Limits(
                memory_bytes=limits.memory_mb * 1024 * 1024,
                cpu_seconds=limits.cpu_seconds,
                open_files=limits.open_files,
                file_size_bytes=limits.file_size_mb * 1024 * 1024,
                processes=limits.processes,
            ),
            writable=(str(directory),),
            readonly_within=(str(directory / "src"), str(directory / "pyproject.toml")),
            pycache_prefix=str(self.pycache),
        )

    # -- stage 5: evaluate ----------------------------------------------------------

    def _evaluate(self, now: float) -> None:
        count = self.config.evaluation.tasks_per_pass
        if count == 0:
            return
        deadline = now + self.config.evaluation.answer_timeout
        for agent_id in self.supervisor.running():
            agent = self.agents.get(agent_id)
            if agent is None or agent.status != "active" or agent.pending:
                continue
            tasks = self.environment.make_tasks(self.rng, count)
            if self.supervisor.send(agent_id, *({"type": "task", "id": task.id,
                                                 "data": task.data} for task in tasks)):
                agent.pending.update((task.id, (task, deadline)) for task in tasks)

    def on_message(self, agent_id: str, message: dict[str, Any]) -> None:
        """An agent said something after hello (called by the supervisor)."""
        agent = self.agents.get(agent_id)
        if agent is None:
            return
        if message["type"] == "answer":
            task_id = message.get("id")
            entry = agent.pending.pop(task_id, None) if isinstance(task_id, str) else None
            if entry is None:
                return  # late, duplicate or invented: worth nothing
            task, deadline = entry
            late = time.monotonic() > deadline
            self._score(agent, 0.0 if late else self._safe_score(task, message.get("value")))
        # "mutated" is only a hint: the next scan finds out what really changed.

    def _safe_score(self, task: Task, value: object) -> float:
        try:
            score = float(self.environment.score(task, value))
        except Exception as exc:  # a plug-in environment may fail; the agent is not to blame
            self.log.error("score_failed", error=f"{type(exc).__name__}: {exc}")
            return 0.0
        return min(1.0, max(0.0, score)) if math.isfinite(score) else 0.0

    def _score(self, agent: Agent, score: float) -> None:
        agent.scores.append(score)
        while len(agent.scores) > self.config.evaluation.window:
            agent.scores.popleft()
        agent.evaluations += 1
        agent.dirty = True
        if not agent.pending:
            agent.fitness = self.environment.fitness(list(agent.scores), agent.active_functions)
            agent.measured = len(agent.scores)
            self.supervisor.send(agent.id, {"type": "feedback", "fitness": agent.fitness})

    def _expire_tasks(self, now: float) -> None:
        for agent in self.agents.values():
            expired = [tid for tid, (_, deadline) in agent.pending.items() if now > deadline]
            for task_id in expired:
                del agent.pending[task_id]
                self._score(agent, 0.0)

    def _report_sandbox(self) -> None:
        """Say once how agents are confined (a degraded sandbox is a warning)."""
        status = self.supervisor.launcher.sandbox_status
        if self.sandbox_reported or not self.supervisor.launcher.alive:
            return
        self.sandbox_reported = True
        processes = self.supervisor.launcher.pids_status
        if status.startswith("rlimits only"):
            self.log.warning("sandbox_degraded", sandbox=status, processes=processes)
        else:
            self.log.info("sandbox", sandbox=status, processes=processes)

    def _await_hellos(self) -> None:
        """--once: let the agents started this pass say hello before tasks are sent."""
        deadline = time.monotonic() + self.config.supervisor.hello_timeout
        while self.stop_reason is None and time.monotonic() < deadline:
            if not any(p.state == "starting" for p in self.supervisor.agents.values()):
                return
            self.supervisor.wait(0.02)
            self._apply_supervisor_events()

    def _drain_answers(self) -> None:
        """--once: give the tasks sent this pass their time to be answered."""
        deadline = time.monotonic() + self.config.evaluation.answer_timeout
        while any(a.pending for a in self.agents.values()) and time.monotonic() < deadline:
            if self.stop_reason is not None:
                break
            self.supervisor.wait(min(0.05, deadline - time.monotonic()))
        self._expire_tasks(time.monotonic() + self.config.evaluation.answer_timeout)

    # -- stage 6-7 ----------------------------------------------------------------------

    def _apply_supervisor_events(self) -> None:
        for event in self.supervisor.drain_events():
            self.events.append(event)
            agent = self.agents.get(event.agent or "")
            if agent is None:
                continue
            if event.kind == "disabled":
                agent.status, agent.reason, agent.dirty = ("disabled",
                                                           str(dict(event.data)["reason"]), True)
            if event.kind in ("crashed", "stopped", "started"):
                agent.pending.clear()
                agent.dirty = True

    def _close_generation(self, registry: Registry) -> tuple[list[dict[str, Any]],
                                                            list[AgentRecord]]:
        """Every ``selection.every`` passes: select, let die, reproduce, publish, record."""
        if self.passes % self.config.selection.every != 0:
            return [], []
        self.generation += 1
        self.generations_run += 1
        living = [a for a in self.agents.values() if a.status != "dead"]
        fitness = [a.fitness for a in living if a.status == "active" and a.fitness is not None]
        decision = decide(self.strategy, [
            Individual(a.id, a.fitness, a.measured, a.status == "active",
                       a.idle_generations, a.energy) for a in living
        ], self._selection_params(), self.select_rng)
        now = time.monotonic()
        for agent_id, level in decision.energies:
            agent = self.agents[agent_id]
            agent.energy, agent.dirty = level, True
        for agent_id in decision.deaths:
            self._die(self.agents[agent_id], now)
        for agent in living:
            if agent.status in ("disabled", "quarantined"):
                agent.idle_generations += 1
                agent.dirty = True
        births = self._reproduce(decision.parents, registry)
        self._publish_elite(registry)
        row = {
            "generation": self.generation,
            "mean": sum(fitness) / len(fitness) if fitness else None,
            "max": max(fitness) if fitness else None,
            "population": sum(1 for a in self.agents.values() if a.status != "dead"),
            "births": len(births),
            "deaths": len(decision.deaths),
        }
        self._event("generation", None, **row)
        return [row], births

    def _selection_params(self) -> Params:
        s = self.config.selection
        return Params(population_size=self.config.population.size, survival=s.survival,
                      elite=s.elite, tournament_size=s.tournament_size, threshold=s.threshold,
                      # a window is all a variant's fitness can ever rest on
                      min_evaluations=min(s.min_evaluations, self.config.evaluation.window),
                      grace=s.grace,
                      metabolism=s.metabolism)

    def _die(self, agent: Agent, now: float) -> None:
        """Selection's verdict: stop, mark dead, remove the directory once the process is gone."""
        was = agent.status
        agent.status, agent.dirty = "dead", True
        agent.reason = "selected against" if was == "active" else f"{was} past its grace"
        agent.pending.clear()
        self.supervisor.stop(agent.id, "died", now)
        self.doomed.add(agent.id)
        self._event("died", agent.id, fitness=agent.fitness, reason=agent.reason,
                    generation=self.generation)

    def _reproduce(self, parents: Sequence[str], registry: Registry) -> list[AgentRecord]:
        """Offspring: new id, the parent's genome copied, built aside, then moved into place."""
        if not parents or self.catalogue is None:
            return []
        staging = self.workspace.staging_dir / f"birth-{os.getpid()}-{self.generation}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        requests = []
        for parent_id in parents:
            parent = self.agents[parent_id]
            genome = self.new_genomes.get(parent.genome_hash) or registry.genome_bytes(
                parent.genome_hash)
            if genome is None:
                continue
            child = str(uuid.UUID(int=self.select_rng.getrandbits(128), version=4))
            requests.append((BuildRequest(child, genome), parent_id))
        built: list[tuple[BuiltAgent, str]] = []
        for request, parent_id in requests:
            try:
                built.extend((b, parent_id) for b in build_chunk(str(staging), [request]))
            except EvolveError as exc:  # the template dropped a gene the parent carries
                self.log.warning("birth_failed", parent=parent_id, error=str(exc))
        sync_filesystem(staging)
        records = []
        wall = time.time()
        for agent, parent_id in built:
            (staging / agent.agent_id).rename(self.workspace.agent_dir(agent.agent_id))
            records.append(AgentRecord(
                id=agent.agent_id, status="active", generation=self.generation,
                parent=parent_id, genome_hash=agent.genome_hash, code_hash=agent.code_hash,
                created=wall, active_files=agent.active_files,
                active_functions=agent.active_functions))
            self.agents[agent.agent_id] = Agent(
                id=agent.agent_id, status="active", reason=None, genome_hash=agent.genome_hash,
                code_hash=agent.code_hash, active_files=agent.active_files,
                active_functions=agent.active_functions)
            self._event("born", agent.agent_id, parent=parent_id, generation=self.generation,
                        genome_hash=agent.genome_hash)
        fsync_dir(self.workspace.agents_dir)
        shutil.rmtree(staging, ignore_errors=True)
        return records

    def _publish_elite(self, registry: Registry) -> None:
        """The best genomes, as ``commons/elite/<rank>.bin``, for agents to recombine with."""
        count = self.config.selection.publish_elite
        enough = min(self.config.selection.min_evaluations, self.config.evaluation.window)
        ranked = sorted((a for a in self.agents.values() if a.status == "active"
                         and a.fitness is not None and a.measured >= max(1, enough)),
                        key=lambda a: (-(a.fitness or 0.0), a.id))[:count]
        directory = self.workspace.commons_dir / "elite"
        directory.mkdir(parents=True, exist_ok=True)
        for rank, agent in enumerate(ranked):
            data = self.new_genomes.get(agent.genome_hash) or registry.genome_bytes(
                agent.genome_hash)
            if data is not None:
                atomic_write(directory / f"{rank}.bin", data, durable=False)
        for stale in directory.glob("*.bin"):
            if not stale.stem.isdigit() or int(stale.stem) >= len(ranked):
                stale.unlink(missing_ok=True)

    def _bury(self) -> None:
        """Remove the directories of dead agents whose process has ended."""
        for agent_id in list(self.doomed):
            proc = self.supervisor.agents.get(agent_id)
            if proc is not None and proc.pid is not None:
                continue
            directory = self.workspace.agent_dir(agent_id)
            self.shredder.discard(directory, self.workspace.trash_dir)
            # its compiled modules too (the pycache mirrors absolute source paths)
            self.shredder.discard(self.pycache / str(directory).lstrip(os.sep),
                                  self.workspace.trash_dir)
            self.doomed.discard(agent_id)
            self.agents.pop(agent_id, None)
            self.supervisor.agents.pop(agent_id, None)

    # -- stage 8: save and notify -----------------------------------------------------

    def _save(self, registry: Registry, generations: list[dict[str, Any]],
              births: Sequence[AgentRecord] = ()) -> None:
        self._apply_supervisor_events()
        updates = []
        for agent in self.agents.values():
            proc = self.supervisor.agents.get(agent.id)
            if not agent.dirty and (proc is None or not proc.dirty):
                continue
            process = "stopped" if proc is None else proc.state
            updates.append((agent.id, (
                agent.status, agent.reason, agent.genome_hash, agent.code_hash,
                agent.active_files, agent.active_functions, agent.lines, agent.complexity,
                agent.mutations, agent.fitness, agent.evaluations,
                0 if proc is None else proc.restarts, process,
                None if proc is None else proc.pid,
                None if proc is None else proc.create_time,
                agent.energy, agent.idle_generations,
            )))
            agent.dirty = False
            if proc is not None:
                proc.dirty = False
        events, self.events = self.events, []
        registry.save_pass(updates, list(self.new_genomes.items()), events, generations, births)
        self.new_genomes.clear()
        self.notifier.publish(events)

    # -- stage 9: between passes ---------------------------------------------------------

    def _serve(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.stop_reason is None and not self.reload_requested:
            now = time.monotonic()
            if now >= deadline:
                return
            self.supervisor.wait(min(deadline - now, 0.25))
            self._expire_tasks(time.monotonic())

    # -- start, stop, reload --------------------------------------------------------------

    def _resume(self, registry: Registry) -> None:
        """Load the living agents and end any process a crashed run left behind."""
        for agent_id, pid, started in registry.stale_processes():
            _end_stale(pid, started)
            self.log.info("stale_process_ended", agent=agent_id, pid=pid)
        self.generation = registry.generation()
        for row in registry.living_agents():
            agent = Agent(
                id=row["id"], status=row["status"], reason=row["reason"],
                genome_hash=row["genome_hash"], code_hash=row["code_hash"],
                active_files=row["active_files"], active_functions=row["active_functions"],
                lines=row["lines"], complexity=row["complexity"], mutations=row["mutations"],
                fitness=row["fitness"], evaluations=row["evaluations"],
                energy=row["energy"], idle_generations=row["idle_generations"],
            )
            agent.dirty = row["pid"] is not None or row["process"] != "stopped"
            self.agents[agent.id] = agent
            proc = self.supervisor.get(agent.id)
            proc.restarts = row["restarts"]
            proc.dirty = False

    def _shutdown(self, registry: Registry) -> None:
        self.supervisor.shutdown(time.monotonic(), self.config.supervisor.stop_timeout)
        self._apply_supervisor_events()
        for agent in self.agents.values():
            agent.pending.clear()
        try:
            self._save(registry, [])
            self._bury()
        finally:
            self.supervisor.close()
            self.notifier.close()
            self.shredder.close()
            self.log.info("life_cycle_stopped", reason=self.stop_reason, passes=self.passes,
                          generation=self.generation)

    def _reload(self) -> None:
        self.reload_requested = False
        try:
            config = config_service.load(self.workspace.config_path)
            environment = load_environment(config.environment,
                                           Settings(config.evaluation.energy_cost))
            strategy = load_strategy(config.selection.strategy)
            notifier = Notifier(config.hooks, config.hook_timeout)
        except EvolveError as exc:
            self.log.error("reload_refused", error=str(exc))
            return
        self.notifier.close()
        self.config, self.environment, self.notifier = config, environment, notifier
        self.strategy = strategy
        self.supervisor.settings = _supervisor_settings(config)
        self.log.info("config_reloaded")

    def _make_supervisor(self, config: Config) -> Supervisor:
        return Supervisor(Launcher(), _supervisor_settings(config), self.on_message)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT: stop after the current stage; SIGHUP: reload evolve.toml."""

        def stop(signum: int, _: FrameType | None) -> None:
            self.stop_reason = signal.Signals(signum).name

        def reload(_signum: int, _frame: FrameType | None) -> None:
            self.reload_requested = True

        previous = {sig: signal.getsignal(sig) for sig in
                    (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        old_wakeup = signal.set_wakeup_fd(self.supervisor.wake_fd, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_wakeup)

    @contextlib.contextmanager
    def _pool(self) -> Iterator[None]:
        workers = self.config.workers
        if workers <= 1:
            yield
            return
        # forkserver: workers never inherit the agents' pipe ends from this process.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["evolve_ai.workers.scan"])
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        try:
            yield
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def _event(self, kind: str, agent: str | None, **data: Any) -> None:
        self.events.append(Event(kind=kind, time=time.time(), agent=agent,
                                 data=tuple(data.items())))


def load_strategy(name: str) -> Strategy:
    builtin = BUILTIN.get(name)
    if builtin is not None:
        return builtin
    strategy: Strategy = load_plugin(name, "evolve_ai.selection", "selection strategy")
    return strategy


def _supervisor_settings(config: Config) -> SupervisorSettings:
    s = config.supervisor
    return SupervisorSettings(
        stop_timeout=s.stop_timeout, hello_timeout=s.hello_timeout, stable_after=s.stable_after,
        max_restarts=s.max_restarts, backoff_initial=s.backoff_initial,
        backoff_max=s.backoff_max, memory_bytes=config.limits.memory_mb * 1024 * 1024,
        processes=config.limits.processes,
    )


def _changed_genes(old: bytes | None, new: bytes, catalogue: Catalogue) -> list[str]:
    """Genes whose expression differs: "path" for files, "path:function" for functions."""
    new_genome = genome_codec.decode(new, catalogue)
    try:
        old_genome = genome_codec.decode(old, catalogue) if old is not None else None
    except EvolveError:
        old_genome = None
    before = _expression(old_genome, catalogue)
    after = _expression(new_genome, catalogue)
    return sorted(gene for gene in before | after if (gene in before) != (gene in after))


def _expression(genome: genome_codec.Genome | None, catalogue: Catalogue) -> set[str]:
    if genome is None:
        return set()
    expressed: set[str] = set()
    for entry, names in genome.expressed(catalogue):
        expressed.add(entry.path)
        expressed.update(f"{entry.path}:{name}" for name in names)
    return expressed


def _end_stale(pid: int, started: float | None) -> None:
    """Kill the process group of a recorded agent, if that very process still exists."""
    try:
        process = psutil.Process(pid)
        if started is None or abs(process.create_time() - started) > 0.01:
            return  # not provably ours: the pid may belong to an unrelated process now
        os.killpg(pid, signal.SIGKILL)
    except (psutil.Error, ProcessLookupError, PermissionError):
        return


def _rotate(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_CAP:
            path.replace(path.with_suffix(".log.1"))


def run_life_cycle(workspace: Workspace, options: RunOptions,
                   overrides: dict[str, Any]) -> RunSummary:
    """Load and check the configuration, take the lock, run until told to stop."""
    if not workspace.is_initialized():
        raise EvolveError(f"no evolve workspace in {workspace.root}: run 'evolve init N' first")
    config = config_service.load(workspace.config_path)
    if overrides:
        config = config.with_overrides(overrides, "command line")
    with workspace.lock("life-cycle"):
        logs.attach_file(workspace.events_log)
        with Registry.open(workspace.db_path) as registry:
            workspace.clean_debris(registry.living_ids())
        return LifeManager(workspace, config, options).run()
