"""The population and the store, mapped both ways: resume after a crash, save a pass.

Fields are mapped by name (``AgentUpdate``'s fields are ``LiveAgent``'s and the
supervisor's), so a column is named once, in ``core.records``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

import psutil

from evolve_ai.core.records import AgentRow, AgentUpdate, Event, GenerationDetail, GenerationRow
from evolve_ai.operations.population import LiveAgent, Population
from evolve_ai.services import logs
from evolve_ai.services.config import Webhook
from evolve_ai.services.store import Store
from evolve_ai.services.supervisor import Supervisor
from evolve_ai.services.webhooks import messages

_PROCESS_FIELDS = frozenset({"restarts", "process", "pid", "pid_started"})
_AGENT_FIELDS = tuple(f for f in AgentUpdate._fields if f not in _PROCESS_FIELDS)


class Persistence:
    def __init__(self, store: Store, population: Population, supervisor: Supervisor) -> None:
        self.store = store
        self.population = population
        self.supervisor = supervisor
        self.log = logs.get_logger(command="life-cycle")
        self._seen = 0  # the last store rowid taken into the population
        self.webhooks: Sequence[Webhook] = ()  # endpoints a pass's events are queued for

    def resume(self) -> None:
        """Load the living agents and end any process a crashed run left behind."""
        for agent_id, pid, started in self.store.stale_processes():
            _end_stale(pid, started)
            self.log.info("stale_process_ended", agent=agent_id, pid=pid)
        self.store.clear_processes()  # none runs now: the records say so, the dead's too
        self.population.generation = self.store.generation()
        self.take_new()

    def take_new(self) -> list[str]:
        """Agents listed since the last look (by ``init``, beside us): their ids."""
        rows, self._seen = self.store.agents_after(self._seen)
        taken = []
        for row in rows:
            if row.id in self.population.agents:
                continue  # our own births
            agent = LiveAgent(**{f: getattr(row, f) for f in _AGENT_FIELDS})
            self.population.agents[agent.id] = agent
            self.supervisor.restore(agent.id, row.restarts)
            taken.append(agent.id)
        return taken

    def save(self, generations: Sequence[GenerationRow] = (),
             births: Sequence[AgentRow] = (), keep_generations: int = 0,
             details: Sequence[GenerationDetail] = ()) -> list[Event]:
        """Commit the pass in one transaction; the events it saved (for the hooks). With
        ``keep_generations`` and a generation closed, prune the store (``Store.prune``)."""
        population = self.population
        population.absorb(self.supervisor.drain_events())
        processes = self.supervisor.take_changed()
        updates = []
        for agent in population.agents.values():
            if not agent.dirty and agent.id not in processes:
                continue
            info = self.supervisor.info(agent.id)
            updates.append(AgentUpdate(
                **{f: getattr(agent, f) for f in _AGENT_FIELDS},
                restarts=0 if info is None else info.restarts,
                process="stopped" if info is None else info.state,
                pid=None if info is None else info.pid,
                pid_started=None if info is None else info.create_time,
            ))
            agent.dirty = False
        events, population.events = population.events, []
        self.store.save_pass(updates, list(population.new_genomes.items()), events,
                             generations, births, messages(self.webhooks, events), details)
        population.new_genomes.clear()
        if generations and keep_generations:
            self.store.prune(keep_generations)
        return events


def _end_stale(pid: int, started: float | None) -> None:
    """Kill the process group of a recorded agent, if that very process still exists."""
    try:
        process = psutil.Process(pid)
        if started is None or abs(process.create_time() - started) > 0.01:
            return  # not provably ours: the pid may belong to an unrelated process now
        os.killpg(pid, signal.SIGKILL)
    except (psutil.Error, ProcessLookupError, PermissionError):
        return
