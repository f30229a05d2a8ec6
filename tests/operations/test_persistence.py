"""Persistence: the population saved and resumed field for field, process records too."""

from __future__ import annotations

import time
from pathlib import Path

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


def test_saved_agents_resume_as_they_were(tmp_path: Path) -> None:
    now = time.time()
    with Store.open(tmp_path / "evolve.db", create=True) as store:
        store.add_agents([AgentRow(ID, "active", 0, None, "g", "c", now, now)], [], [])
        population, sup = Population(), supervisor()
        persistence = Persistence(store, population, sup)
        persistence.resume()
        agent = population.agents[ID]
        (agent.reason, agent.active_files, agent.active_functions, agent.lines,
         agent.complexity, agent.mutations, agent.fitness, agent.evaluations, agent.energy,
         agent.idle_generations) = ("why", 2, 3, 40, 5, 6, 0.5, 70, 1.5, 2)
        agent.dirty = True
        persistence.save()
        sup.close()

        again, sup = Population(), supervisor()
        Persistence(store, again, sup).resume()
        resumed = again.agents[ID]
        for field in ("status", "reason", "genome_hash", "code_hash", "active_files",
                      "active_functions", "lines", "complexity", "mutations", "fitness",
                      "evaluations", "energy", "idle_generations"):
            assert getattr(resumed, field) == getattr(agent, field), field
        assert resumed.measured == 0  # a resumed agent is measured afresh before selection
        sup.close()


def test_a_process_that_ran_is_saved_and_then_cleared(tmp_path: Path) -> None:
    """The process record follows the supervisor; a clean stop leaves no pid behind."""
    now = time.time()
    with Store.open(tmp_path / "evolve.db", create=True) as store:
        store.add_agents([AgentRow(ID, "active", 0, None, "g", "c", now, now)], [], [])
        population, sup = Population(), supervisor()
        persistence = Persistence(store, population, sup)
        persistence.resume()
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
