"""The scheduler on stub agents: who runs, turns above max_running, births first, restarts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from evolve_ai.operations.lifecycle import supervisor_settings
from evolve_ai.operations.population import LiveAgent, Population
from evolve_ai.operations.scheduler import Scheduler, launch_spec
from evolve_ai.services.config import Config
from evolve_ai.services.stub_launcher import StubClock, StubLauncher
from evolve_ai.services.supervisor import Supervisor
from evolve_ai.services.workspace import Workspace


class World:
    """A population of ``count`` stub agents, a supervisor and a scheduler over them."""

    def __init__(self, root: Path, count: int, max_running: int, turn_passes: int) -> None:
        self.workspace = Workspace(root)
        self.workspace.ensure_layout()
        self.config = Config().with_overrides(
            {"lifecycle.max_running": max_running, "lifecycle.turn_passes": turn_passes},
            "test")
        self.clock = StubClock()
        self.launcher = StubLauncher(self.clock)
        self.supervisor = Supervisor(self.launcher, supervisor_settings(self.config),
                                     lambda agent, message: None, clock=self.clock,
                                     blocking=False)
        self.population = Population()
        for n in range(count):
            self.add(f"agent-{n:03d}")
        self.scheduler = Scheduler(self.workspace, self.config, self.population,
                                   self.supervisor)
        self.alive_after_schedule = 0

    def add(self, agent_id: str) -> LiveAgent:
        agent = LiveAgent(id=agent_id, status="active", reason=None, genome_hash="g",
                          code_hash="c")
        self.population.agents[agent_id] = agent
        return agent

    def one_pass(self) -> set[str]:
        """A pass as the life cycle runs it: schedule, then let the agents act; who runs."""
        self.scheduler.schedule(self.clock())
        self.alive_after_schedule = len(self.supervisor.alive())
        for _ in range(4):
            self.launcher.advance(0.25)
            self.supervisor.wait(0)
        return set(self.supervisor.running())

    def close(self) -> None:
        self.supervisor.shutdown(self.clock(), 0.0)
        self.supervisor.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path, count=10, max_running=4, turn_passes=2)
    yield made
    made.close()


def test_never_more_than_max_running(world: World) -> None:
    for _ in range(20):
        running = world.one_pass()
        assert world.alive_after_schedule <= 4  # processes, stopping ones included
        assert len(running) <= 4


def test_every_agent_gets_turns_of_turn_passes_passes(world: World) -> None:
    """Round robin: over enough passes everyone runs, and each turn lasts turn_passes passes
    of tasks before the agent makes room."""
    seen: dict[str, int] = {}
    streak: dict[str, int] = {}
    turns: list[int] = []  # passes each completed turn lasted
    for _ in range(30):
        running = world.one_pass()
        for agent_id in running:
            seen[agent_id] = seen.get(agent_id, 0) + 1
            streak[agent_id] = streak.get(agent_id, 0) + 1
        for agent_id in [a for a in streak if a not in running]:
            turns.append(streak.pop(agent_id))
    assert set(seen) == set(world.population.agents)
    # running when launched, then turn_passes passes of tasks before making room
    assert turns and min(turns) >= world.config.lifecycle.turn_passes + 1


def test_turns_turn_over_a_share_of_the_places_per_pass(world: World) -> None:
    """At most ceil(max_running / turn_passes) agents yield their place in one pass."""
    world.one_pass()
    previous = set(world.supervisor.running())
    for _ in range(15):
        running = world.one_pass()
        assert len(previous - running) <= 2
        previous = running


def test_births_run_before_founders_that_never_ran(tmp_path: Path) -> None:
    made = World(tmp_path, count=6, max_running=2, turn_passes=1)
    try:
        born = [made.add("child-1"), made.add("child-2")]
        assert made.one_pass() == {agent.id for agent in born}
    finally:
        made.close()


def test_an_agent_whose_code_changed_is_restarted(world: World) -> None:
    world.one_pass()
    agent = next(a for a in world.population.agents.values()
                 if a.id in world.supervisor.running())
    first = world.supervisor.info(agent.id)
    assert first is not None and first.pid is not None
    agent.needs_restart = True
    world.one_pass()  # stopped this pass
    assert world.launcher.exits[0].agent_id == agent.id
    assert world.launcher.exits[0].returncode == 0  # a polite stop, not a crash
    pid = None
    for _ in range(20):  # then it waits its turn like any other, and runs again
        world.one_pass()
        again = world.supervisor.info(agent.id)
        pid = None if again is None else again.pid
        if pid is not None:
            break
    assert pid is not None and pid != first.pid
    assert not agent.needs_restart


def test_only_active_agents_run(world: World) -> None:
    for agent in list(world.population.agents.values())[:8]:
        agent.status = "quarantined"
    assert world.one_pass() == {"agent-008", "agent-009"}


def test_launch_spec_confines_the_agent_to_its_directory(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    spec = launch_spec(workspace, Config(), "some-id")
    directory = str(workspace.agent_dir("some-id"))
    assert spec.cwd == directory and spec.writable == (directory,)
    assert f"{directory}/src" in spec.readonly_within
    assert spec.env["EVOLVE_AGENT_ID"] == "some-id"
    assert "PYTHONPATH" in spec.env and spec.env["HOME"] == directory
    assert spec.limits.memory_bytes == Config().limits.memory_mb << 20


def test_agents_of_a_root_orchestrator_get_uids_of_their_own(tmp_path: Path) -> None:
    """Stable, in the configured range; none where others cannot reach the workspace (or
    the interpreter's own modules), and the reason said."""
    import os
    import tempfile

    from evolve_ai.operations.scheduler import uid_status

    closed = Workspace(tmp_path)  # pytest's directories are closed to other users
    open_root = Path(tempfile.mkdtemp(prefix="evolve-open-"))
    open_root.chmod(0o711)
    try:
        config = Config()
        assert launch_spec(closed, config, "some-id").uid is None
        if os.geteuid() != 0:
            assert uid_status(closed, config) == "evolve does not run as root"
            return
        assert "closed to other users" in uid_status(closed, config)
        reachable = uid_status(Workspace(open_root), config) == ""
        spec = launch_spec(Workspace(open_root), config, "some-id")
        if not reachable:  # e.g. a Python under /root: said, and no uid given
            assert spec.uid is None
            return
        assert spec.uid is not None
        assert config.sandbox.uid_base <= spec.uid < config.sandbox.uid_base + config.sandbox.uids
        assert launch_spec(Workspace(open_root), config, "some-id").uid == spec.uid
        off = config.with_overrides({"sandbox.uid_base": 0}, "test")
        assert launch_spec(Workspace(open_root), off, "some-id").uid is None
    finally:
        open_root.rmdir()
