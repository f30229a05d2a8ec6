"""Persistence: the population saved and resumed field for field, process records too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evolve_ai.core.records import AgentRow
from evolve_ai.operations.lifecycle import supervisor_settings
from evolve_ai.operations.persistence import Persistence
from evolve_ai.operations.population import Population
from evolve_ai.operations.scheduler import launch_spec
from evolve_ai.services.config import Config
from evolve_ai.services.store import Store
from evolve_ai.services.stub_launcher import StubClock, StubLauncher
from evolve_ai.services.supervisor import Supervisor
from evolve_ai.services.workspace import Workspace

ID = "00000000-0000-4000-8000-000000000001"


def supervisor() -> Supervisor:
    clock = StubClock()
    return Supervisor(StubLauncher(clock), supervisor_settings(Config()),
                      lambda agent, message: None, clock=clock, blocking=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store that lists one agent."""
    now = time.time()
    with Store.open(tmp_path / "evolve.db", create=True) as made:
        made.add_agents([AgentRow(ID, "active", 0, None, "g", "c", now, now)], [], [])
        yield made


def resumed(store: Store) -> tuple[Population, Supervisor, Persistence]:
    population, sup = Population(), supervisor()
    persistence = Persistence(store, population, sup)
    persistence.resume()
    return population, sup, persistence


def test_saved_agents_resume_as_they_were(store: Store) -> None:
    population, sup, persistence = resumed(store)
    agent = population.agents[ID]
    (agent.reason, agent.active_files, agent.active_functions, agent.lines,
     agent.complexity, agent.mutations, agent.fitness, agent.evaluations, agent.energy,
     agent.idle_generations) = ("why", 2, 3, 40, 5, 6, 0.5, 70, 1.5, 2)
    agent.dirty = True
    persistence.save()
    sup.close()

    again, sup, _ = resumed(store)
    back = again.agents[ID]
    for field in ("status", "reason", "genome_hash", "code_hash", "active_files",
                  "active_functions", "lines", "complexity", "mutations", "fitness",
                  "evaluations", "energy", "idle_generations"):
        assert getattr(back, field) == getattr(agent, field), field
    assert back.measured == 0  # a resumed agent is measured afresh before selection
    sup.close()


def test_a_process_that_ran_is_saved_and_then_cleared(store: Store, tmp_path: Path) -> None:
    """The process record follows the supervisor; a clean stop leaves no pid behind."""
    _, sup, persistence = resumed(store)
    sup.start(launch_spec(Workspace(tmp_path), Config(), ID), 2, sup.clock())
    sup.wait(0)
    events = persistence.save()
    row = store.find(ID)
    assert (row.process, row.pid is not None) == ("running", True)
    assert [e.kind for e in events] == ["started"]
    sup.shutdown(sup.clock(), 1.0)
    persistence.save()
    row = store.find(ID)
    assert (row.process, row.pid, row.pid_started) == ("stopped", None, None)
    sup.close()


def test_resume_clears_every_process_record_the_dead_included(tmp_path: Path) -> None:
    """After a kill -9, rows still claim running processes; none runs: they must say so."""
    dead = "00000000-0000-4000-8000-000000000002"
    now = time.time()
    with Store.open(tmp_path / "evolve.db", create=True) as store:
        store.add_agents([AgentRow(ID, "active", 0, None, "g", "c", now, now),
                          AgentRow(dead, "dead", 0, None, "g", "c", now, now)], [], [])
        with store.transaction() as db:  # as a crashed life cycle left them
            db.execute("UPDATE agents SET process = 'running', pid = 999999999, "
                       "pid_started = 1.0")
        sup = supervisor()
        Persistence(store, Population(), sup).resume()
        for agent_id in (ID, dead):
            row = store.find(agent_id)
            assert (row.process, row.pid, row.pid_started) == ("stopped", None, None)
        sup.close()
