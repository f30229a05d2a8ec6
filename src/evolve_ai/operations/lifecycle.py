"""``LifeManager``: the life cycle's loop of passes, its signals and its reloads.

The work of a pass is the stages' (``versions``, ``scanner``, ``scheduler``, ``evaluator``,
``generations``, ``persistence``), which share the ``Population``; this module only
runs them in order, between passes serves the agents' I/O, and acts on signals
(which only set flags) between stages. docs/design.md draws a pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from evolve_ai._linux import name_thread
from evolve_ai.core.records import AgentRow, Event, GenerationDetail, GenerationRow
from evolve_ai.core.selection.builtins import load_strategy
from evolve_ai.environments import Settings, load_environment
from evolve_ai.errors import EvolveError
from evolve_ai.operations import backup as backups
from evolve_ai.operations.evaluator import Evaluator
from evolve_ai.operations.generations import Extinct, Generations
from evolve_ai.operations.innovation import Innovation
from evolve_ai.operations.persistence import Persistence
from evolve_ai.operations.population import Population
from evolve_ai.operations.scanner import Scanner
from evolve_ai.operations.scheduler import Scheduler, uid_status
from evolve_ai.operations.versions import Versions
from evolve_ai.services import config as config_service
from evolve_ai.services import logs
from evolve_ai.services.backends import launcher_for
from evolve_ai.services.config import Config, parse_listen
from evolve_ai.services.launcher import Launcher
from evolve_ai.services.metrics import Metrics
from evolve_ai.services.notifier import Notifier
from evolve_ai.services.panel import TREND, Panel, PassView
from evolve_ai.services.store import Store
from evolve_ai.services.supervisor import Sandbox, Supervisor, SupervisorSettings
from evolve_ai.services.webhooks import Deliverer
from evolve_ai.services.workspace import Workspace
from evolve_ai.workers import ignore_interrupts


@dataclass(frozen=True, slots=True)
class RunOptions:
    once: bool = False
    generations: int | None = None
    seed: int | None = None
    panel: bool = False  # a live summary on the terminal (stderr)
    # Settings given on the command line: they win over evolve.toml at every reload.
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunSummary:
    passes: int = 0
    generations: int = 0  # the workspace's generation at the end
    generations_run: int = 0  # generations closed by this run
    stopped_by: str = ""


class LifeManager:
    def __init__(self, workspace: Workspace, config: Config, options: RunOptions,
                 launcher: Callable[[], Launcher] | None = None) -> None:
        self.workspace = workspace
        self.config = config
        self.options = options
        self.log = logs.get_logger(command="life-cycle")
        self.passes = 0
        self.metrics: Metrics | None = None  # when metrics.listen is set
        self.panel: Panel | None = None  # on a terminal
        self.deliverer: Deliverer | None = None  # when [[webhooks]] are set
        self.persistence: Persistence | None = None
        self._described: tuple[str | None, str, str] | None = None  # its info, as said
        self._backing_up: threading.Thread | None = None  # an automatic backup at work
        self.stop_reason: str | None = None
        self.reload_requested = False
        self._sandbox_said: Sandbox | None = None  # as last reported
        self._placement: dict[str, int] | None = None  # agents per node, as last reported
        self.pool: ProcessPoolExecutor | None = None
        self.population = Population()
        # Plug-ins first: one that fails to load leaves nothing open behind it.
        environment = load_environment(config.environment,
                                       Settings(config.evaluation.energy_cost))
        strategy = load_strategy(config.selection.strategy)
        self.notifier = Notifier(config.hooks, config.hook_timeout)
        # Separate streams: how many tasks were drawn never shifts a selection.
        seed = options.seed
        task_rng = random.Random(f"tasks:{seed}" if seed is not None else None)
        select_rng = random.Random(f"select:{seed}" if seed is not None else None)
        make_launcher = launcher or launcher_for(config.cluster, workspace)
        self.supervisor = Supervisor(make_launcher(), supervisor_settings(config),
                                     self._on_message)
        self.scanner = Scanner(workspace, self.population, self.supervisor,
                               workspace.pycache_dir, config)
        self.versions = Versions(workspace, self.population, self.supervisor,
                                 lambda agent, reason: self.scanner.set_status(
                                     agent, "quarantined", reason, time.monotonic()))
        self.scheduler = Scheduler(workspace, config, self.population, self.supervisor)
        self.evaluator = Evaluator(config, self.population, self.supervisor, environment,
                                   task_rng)
        self.generations = Generations(workspace, config, self.population, self.supervisor,
                                       strategy, select_rng)
        self.innovation = Innovation(workspace, config, self.population, self.supervisor,
                                     environment)

    # -- the loop ---------------------------------------------------------------

    def run(self) -> RunSummary:
        summary = RunSummary()
        with self._signals(), self._panel(), self._pool(), \
                Store.open(self.workspace.db_path) as store:
            persistence = Persistence(store, self.population, self.supervisor)
            self.persistence = persistence
            self._send_webhooks()
            persistence.resume()
            # The life cycle's own events go where the others go: log, store, hooks, webhooks.
            self.population.event("life_cycle_started", None,
                                  agents=len(self.population.agents),
                                  generation=self.population.generation,
                                  seed=self.options.seed)
            self._say_population()
            self._serve_metrics()
            try:
                while self.stop_reason is None:
                    self._pass(store, persistence)
                    summary.passes += 1
                    if self.options.once:
                        self.evaluator.drain(lambda: self.stop_reason is not None)
                        self.stop_reason = "once"
                    elif (self.options.generations is not None
                          and self.generations.closed >= self.options.generations):
                        self.stop_reason = "generations"
                    else:
                        self._serve(self.config.lifecycle.interval)
                    if self.reload_requested:
                        self._reload()
            finally:
                self._shutdown(persistence)
        summary.stopped_by = self.stop_reason or "error"
        summary.generations = self.population.generation
        summary.generations_run = self.generations.closed
        return summary

    def _send_webhooks(self) -> None:
        """Queue the events for ``[[webhooks]]`` and run their senders (again, after a
        reload that changed them)."""
        if self.deliverer is not None:
            self.deliverer.stop()
            self.deliverer = None
        endpoints = self.config.webhooks
        if self.persistence is not None:
            self.persistence.webhooks = endpoints
        if endpoints:
            self.deliverer = Deliverer(self.workspace.db_path, endpoints)
            self.deliverer.start()

    def _serve_metrics(self) -> None:
        """Serve ``metrics.listen``; one that cannot be served is an error, not a stop."""
        listen = self.config.metrics.listen
        if not listen:
            return
        metrics = Metrics()
        try:
            metrics.serve(*parse_listen(listen))
        except OSError as error:
            self.log.error("metrics_unavailable", listen=listen, error=str(error))
            return
        self.metrics = metrics
        self.log.info("metrics_served", listen=listen)

    def _observe(self, events: list[Event], generations: list[GenerationRow],
                 seconds: float) -> None:
        """The pass, in the metrics (when served) and on the panel (when shown)."""
        metrics, panel = self.metrics, self.panel
        if metrics is None and panel is None:
            return
        statuses: dict[str, int] = {}
        for agent in self.population.agents.values():
            statuses[agent.status] = statuses.get(agent.status, 0) + 1
        active = self.population.active()
        states = self.supervisor.states(a.id for a in active)
        fitness = [a.fitness for a in active if a.fitness is not None]
        if panel is not None:
            for row in generations:
                panel.closed(row)
            panel.show(PassView(self.passes, seconds, self.population.generation, statuses,
                                states.get("running", 0), fitness))
        if metrics is None:
            return
        metrics.count(events)
        metrics.pass_seconds.observe(seconds)
        for latency in self.supervisor.take_hellos():
            metrics.hello_seconds.observe(latency)
        metrics.tally_tasks(self.evaluator.totals)
        metrics.set_population(statuses, states, self.population.generation, fitness)
        if self.config.webhooks and self.persistence is not None:
            metrics.set_webhooks(self.persistence.store.webhook_report())
        template = self.population.template
        described = (None if template is None else template.catalogue.fingerprint,
                     self.config.selection.strategy, self.config.environment)
        if template is not None and described != self._described:  # first, or changed
            metrics.describe(template.catalogue.fingerprint, *described[1:])
            self._described = described
        metrics.published()

    def _backup(self) -> None:
        """An automatic backup (``backup.every``) on a thread of its own, so that the
        agents' answers are read on time meanwhile; one at a time; a failure is
        logged, never fatal."""
        if self._backing_up is not None and self._backing_up.is_alive():
            self.log.warning("backup_skipped", reason="the previous one is still running")
            return
        keep = self.config.backup.keep

        def run() -> None:
            name_thread()
            started = time.monotonic()
            try:
                made = backups.backup(self.workspace)
                pruned = backups.prune(self.workspace, keep)
            except (OSError, EvolveError, sqlite3.Error) as error:
                self.log.error("backup_failed", error=str(error))
                return
            self.log.info("backup_done", path=str(made.path), agents=made.agents,
                          bytes=made.size, pruned=len(pruned),
                          seconds=round(time.monotonic() - started, 3))

        self._backing_up = threading.Thread(target=run, name="evolve-backup", daemon=True)
        self._backing_up.start()

    def _say_population(self) -> None:
        """What selection will do to a population other than ``population.size``."""
        living, size = len(self.population.living()), self.config.population.size
        if living > size:
            self.log.warning("population_above_size", living=living, size=size,
                             effect=f"selection will bring it down to {size}: about "
                                    f"{living - size} agents die at the next generation")
        elif living < size:
            self.log.info("population_below_size", living=living, size=size,
                          effect=f"offspring fill the {size - living} free places as "
                                 "generations close")

    def _pass(self, store: Store, persistence: Persistence) -> None:
        started = time.monotonic()
        self.passes += 1
        self.population.absorb(self.supervisor.drain_events())  # seen while waiting
        added = persistence.take_new()
        if added:  # an init beside us: it raised population.size before listing them
            self.log.info("agents_added", count=len(added), living=len(self.population.living()))
            self._reload()
        self.versions.refresh(store)
        self.scanner.apply(self.scanner.scan(self.pool), store, time.monotonic())
        now = time.monotonic()
        self.scheduler.schedule(now)
        self._report_sandbox(store)
        self._report_nodes(store)
        if self.options.once:
            self._await_hellos()
            now = time.monotonic()
        self.evaluator.send_tasks(now)
        self.supervisor.monitor(now)
        self.population.absorb(self.supervisor.drain_events())
        generations: list[GenerationRow] = []
        births: list[AgentRow] = []
        details: list[GenerationDetail] = []
        if self.generations.due(time.monotonic()):
            generations, births, details = self.generations.close(store, time.monotonic())
        extinct: Extinct | None = None
        try:
            births += self.generations.guard(store)
        except Extinct as error:
            extinct = error
        self.innovation.step(store)
        saved = persistence.save(generations, births, self.config.logs.event_generations,
                                 details)
        self.notifier.publish(saved)
        if self.deliverer is not None:
            self.deliverer.notice(saved)
        self._observe(saved, generations, time.monotonic() - started)
        if extinct is not None:  # saved first: the error is recorded with the pass
            self.stop_reason = "extinction"
            raise extinct
        every = self.config.backup.every
        if generations and every and self.population.generation % every == 0:
            self._backup()
        self._bury()
        self.log.debug("pass_done", number=self.passes,
                       seconds=round(time.monotonic() - started, 4),
                       running=len(self.supervisor.running()))

    def _serve(self, seconds: float) -> None:
        """Between passes: agents' answers, exits and task deadlines; with no interval,
        what is ready at once (so that passes back to back still hear the agents)."""
        deadline = time.monotonic() + seconds
        while self.stop_reason is None and not self.reload_requested:
            now = time.monotonic()
            self.supervisor.wait(max(0.0, min(deadline - now, 0.25)))
            self.evaluator.expire(time.monotonic())
            if time.monotonic() >= deadline:
                return

    def _on_message(self, agent_id: str, message: dict[str, Any]) -> None:
        self.evaluator.on_message(agent_id, message)
        self.innovation.on_message(agent_id, message)

    def _bury(self) -> None:
        for agent_id in self.generations.bury():
            self.scheduler.forget(agent_id)

    def _report_nodes(self, store: Store) -> None:
        """Agents per cluster node, in the store (for ``status``) and the metrics, when
        they change; a life cycle on one machine clears what a cluster left."""
        placement = self.supervisor.launcher.placement()
        if placement == self._placement:
            return
        store.set_nodes(placement or None)
        if self.metrics is not None:
            self.metrics.set_nodes(placement)
        self._placement = placement

    def _report_sandbox(self, store: Store) -> None:
        """Say how agents are confined (a degraded sandbox is a warning), in the log and
        in the store, for ``evolve status``: once, and again if it changes (a cluster
        node that joins with less confinement than the others)."""
        sandbox = self.supervisor.sandbox()
        if sandbox is None or sandbox == self._sandbox_said:
            return
        self._sandbox_said = sandbox
        problem = uid_status(self.workspace, self.config)
        uids = f"evolve's own: {problem}" if problem else "one per agent"
        # Agents of a root orchestrator that keep its uid keep root's file access.
        said = {"sandbox": sandbox.status, "processes": sandbox.processes,
                "memory": sandbox.memory, "uids": uids}
        store.set_sandbox(said)
        if self.metrics is not None:
            self.metrics.set_sandbox(said)
            self.metrics.published()
        if sandbox.degraded or (problem and os.geteuid() == 0):
            self.log.warning("sandbox_degraded", **said)
        else:
            self.log.info("sandbox", **said)

    def _await_hellos(self) -> None:
        """--once: let the agents started this pass say hello before tasks are sent."""
        deadline = time.monotonic() + self.config.supervisor.hello_timeout
        while self.stop_reason is None and time.monotonic() < deadline:
            if not self.supervisor.any_starting():
                return
            self.supervisor.wait(0.02)
            self.population.absorb(self.supervisor.drain_events())

    # -- stop and reload --------------------------------------------------------------

    def _shutdown(self, persistence: Persistence) -> None:
        self.supervisor.shutdown(time.monotonic(), self.config.supervisor.stop_timeout)
        if self._backing_up is not None:  # a backup under way is finished, not torn
            self._backing_up.join()
        for agent in self.population.agents.values():
            agent.pending.clear()
        self.population.event("life_cycle_stopped", None, reason=self.stop_reason,
                              passes=self.passes, generation=self.population.generation)
        try:
            self.notifier.publish(persistence.save())
            self._bury()
        finally:
            if self.deliverer is not None:  # what is left waits in the outbox
                self.deliverer.stop()
            self.supervisor.close()
            self.notifier.close()
            self.generations.close_shredder()
            self.innovation.close()

    def _reload(self) -> None:
        """SIGHUP: read evolve.toml again; a bad file is refused and the old one kept."""
        self.reload_requested = False
        try:
            config = config_service.load(self.workspace.config_path)
            if self.options.overrides:  # the command line still wins over the file
                config = config.with_overrides(self.options.overrides, "command line")
            environment = load_environment(config.environment,
                                           Settings(config.evaluation.energy_cost))
            strategy = load_strategy(config.selection.strategy)
            notifier = Notifier(config.hooks, config.hook_timeout)
        except EvolveError as exc:
            self.log.error("reload_refused", error=str(exc))
            return
        self.notifier.close()
        changed_webhooks = config.webhooks != self.config.webhooks
        self.config, self.notifier = config, notifier
        if changed_webhooks:
            self._send_webhooks()
        for stage in (self.scanner, self.scheduler, self.evaluator, self.generations):
            stage.config = config
        self.evaluator.environment, self.generations.strategy = environment, strategy
        self.innovation.reload(config, environment)
        self.supervisor.settings = supervisor_settings(config)
        self.population.event("config_reloaded", None)

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
    def _panel(self) -> Iterator[None]:
        """The live panel, taking the console's warnings while it is shown."""
        if not self.options.panel:
            yield
            return
        self.panel = Panel(str(self.workspace.root), self.config.lifecycle.interval)
        with Store.open(self.workspace.db_path) as store:  # the trend goes on after a restart
            for row in store.history(TREND):
                if row.generation > 0:
                    self.panel.closed(row)
        self.panel.start()
        logs.tap_console(self.panel.warn)
        try:
            yield
        finally:
            logs.tap_console(None)
            self.panel.stop(self.stop_reason or "error")

    @contextlib.contextmanager
    def _pool(self) -> Iterator[None]:
        workers = self.config.workers
        if workers <= 1:
            yield
            return
        # forkserver: workers never inherit the agents' pipe ends from this process.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["evolve_ai.workers.scan"])
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                        initializer=ignore_interrupts)
        try:
            yield
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def supervisor_settings(config: Config) -> SupervisorSettings:
    s = config.supervisor
    return SupervisorSettings(
        stop_timeout=s.stop_timeout, hello_timeout=s.hello_timeout, stable_after=s.stable_after,
        max_restarts=s.max_restarts, backoff_initial=s.backoff_initial,
        backoff_max=s.backoff_max, memory_bytes=config.limits.memory_mb * 1024 * 1024,
        processes=config.limits.processes, cpu_seconds=config.limits.cpu_seconds,
    )


def run_life_cycle(workspace: Workspace, options: RunOptions,
                   overrides: dict[str, Any]) -> RunSummary:
    """Load and check the configuration, take the lock, run until told to stop."""
    if not workspace.is_initialized():
        raise EvolveError(f"no evolve workspace in {workspace.root}: run 'evolve init N' first")
    config = config_service.load(workspace.config_path)
    if overrides:
        config = config.with_overrides(overrides, "command line")
        options = dataclasses.replace(options, overrides=dict(overrides))
    with workspace.lock("life-cycle"):
        logs.attach_file(workspace.events_log, config.logs.max_mb << 20, config.logs.files)
        with Store.open(workspace.db_path) as store:
            store.check_integrity()
            logs.report_cleanup(workspace.clean_debris(store), workspace)
        return LifeManager(workspace, config, options).run()
