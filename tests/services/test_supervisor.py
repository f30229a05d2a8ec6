"""The supervisor's state machine on the stub launcher: every rule, in milliseconds."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from evolve_ai.services.launcher import LaunchSpec, Rlimits
from evolve_ai.services.stub_launcher import Program, StubClock, StubLauncher
from evolve_ai.services.supervisor import Supervisor, SupervisorSettings

PLAIN = Program()  # says hello at once, obeys stop, never answers
SETTINGS = SupervisorSettings(stop_timeout=4.0, hello_timeout=10.0, stable_after=10.0,
                              max_restarts=3, backoff_initial=1.0, backoff_max=8.0,
                              memory_bytes=100 << 20, processes=4)


def spec(agent_id: str = "a") -> LaunchSpec:
    return LaunchSpec(agent_id, "/nowhere", {}, Rlimits(None, None, None, None, None),
                      ("/nowhere",), (), None)


class Harness:
    """A supervisor over stub agents, and what it handed to its message handler."""

    def __init__(self, program: Program = PLAIN, settings: SupervisorSettings = SETTINGS) -> None:
        self.clock = StubClock()
        self.launcher = StubLauncher(self.clock, program)
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.supervisor = Supervisor(self.launcher, settings,
                                     lambda agent, message: self.messages.append((agent, message)),
                                     clock=self.clock, blocking=False)

    def start(self, agent_id: str = "a") -> bool:
        return self.supervisor.start(spec(agent_id), 2, self.clock())

    def run(self, seconds: float, step: float = 0.25) -> None:
        """Let ``seconds`` pass on the clock, the agents and the supervisor acting at each step."""
        elapsed = 0.0
        while elapsed < seconds:
            self.launcher.advance(step)
            self.supervisor.wait(0)
            self.launcher.step()
            self.supervisor.wait(0)
            elapsed += step

    def kinds(self) -> list[str]:
        return [event.kind for event in self.supervisor.drain_events()]

    def state(self, agent_id: str = "a") -> str:
        info = self.supervisor.info(agent_id)
        assert info is not None
        return info.state

    def restarts(self, agent_id: str = "a") -> int:
        info = self.supervisor.info(agent_id)
        assert info is not None
        return info.restarts

    def close(self) -> None:
        self.supervisor.close()
        assert not self.launcher.processes  # closing the launcher ends every agent


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.close()


def make(program: Program, settings: SupervisorSettings = SETTINGS) -> Harness:
    return Harness(program, settings)


class TestStart:
    def test_an_agent_that_says_hello_runs(self, harness: Harness) -> None:
        """start -> starting; hello -> running; the pid is recorded."""
        assert harness.start()
        assert harness.state() == "starting"
        harness.run(0.5)
        assert harness.state() == "running"
        assert harness.supervisor.running() == ["a"]
        assert harness.kinds() == ["started"]

    def test_a_refused_launch_is_a_crash_with_backoff(self) -> None:
        """The launcher refuses: the agent crashed, and waits out a backoff."""
        made = make(Program())
        try:
            made.launcher.start()
            made.launcher.refuse = "no more forks"
            assert not made.start()
            assert made.kinds() == ["crashed", "restarted"]
            assert made.state() == "backoff"
            assert not made.supervisor.ready_to_restart("a", made.clock())
            made.clock.advance(1.0)
            assert made.supervisor.ready_to_restart("a", made.clock())
        finally:
            made.close()


class TestHello:
    def test_no_hello_within_the_timeout_is_a_crash(self) -> None:
        """An agent silent past hello_timeout is killed and counted as crashed."""
        made = make(Program(hello_after=None))
        try:
            made.start()
            made.run(9.5)
            assert made.state() == "starting"
            made.run(1.0)
            kinds = made.kinds()
            assert "hung" in kinds and "crashed" in kinds
            assert made.state() == "backoff"
            assert made.launcher.exits[-1].returncode == -signal.SIGKILL
        finally:
            made.close()


class TestBackoff:
    def test_delays_double_up_to_the_ceiling(self) -> None:
        """Crash after crash, the wait before each restart doubles: 1, 2, 4, 8, 8."""
        settings = SupervisorSettings(**{**_as_dict(SETTINGS), "max_restarts": 10})
        made = make(Program(exit_after=0.1), settings)
        try:
            delays = []
            for _ in range(5):
                made.start()
                made.run(0.25)
                events = made.supervisor.drain_events()
                restarted = [e for e in events if e.kind == "restarted"]
                assert len(restarted) == 1
                delays.append(dict(restarted[0].data)["delay"])
                while not made.supervisor.ready_to_restart("a", made.clock()):
                    made.clock.advance(0.5)
            assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
            assert made.restarts() == 5
        finally:
            made.close()

    def test_max_restarts_disables(self) -> None:
        """More consecutive crashes than max_restarts: disabled, never started again."""
        made = make(Program(exit_after=0.1))
        try:
            kinds: list[str] = []
            for _ in range(4):
                made.start()
                made.run(0.25)
                kinds += made.kinds()
                made.clock.advance(60.0)
            assert kinds.count("crashed") == 4
            assert kinds[-1] == "disabled"
            assert made.state() == "exited"
            assert not made.supervisor.ready_to_restart("a", made.clock())
        finally:
            made.close()

    def test_a_stable_run_resets_the_crash_count(self) -> None:
        """A run longer than stable_after forgets the crashes before it (its own counts)."""
        made = make(Program(exit_after=0.1))
        try:
            for _ in range(3):  # three quick crashes: one more would disable
                made.start()
                made.run(0.25)
                made.clock.advance(60.0)
            made.launcher.program = Program(exit_after=12.0)
            made.start()
            made.run(12.5)  # ran 12 s > stable_after, then crashed: the count is 1 again
            made.clock.advance(60.0)
            made.launcher.program = Program(exit_after=0.1)
            for _ in range(2):
                made.start()
                made.run(0.25)
                made.clock.advance(60.0)
            assert "disabled" not in made.kinds()
            assert made.state() == "backoff"
            made.start()  # the fourth crash in a row since the stable run
            made.run(0.25)
            assert made.kinds()[-1] == "disabled"
        finally:
            made.close()


    def test_a_long_run_stopped_politely_forgets_earlier_crashes(self) -> None:
        """Crashes, then a turn longer than stable_after that ends in a polite stop: the
        next quick crash is the first of a new series, not one more of the old."""
        made = make(Program(exit_after=0.1))
        try:
            for _ in range(3):
                made.start()
                made.run(0.25)
                made.clock.advance(60.0)
            made.launcher.program = Program()
            made.start()
            made.run(12.0)
            made.supervisor.stop("a", "turn", made.clock())
            made.run(0.25)
            assert made.state() == "stopped"
            made.launcher.program = Program(exit_after=0.1)
            made.start()
            made.run(0.25)
            assert "disabled" not in made.kinds()
            assert made.state() == "backoff"
        finally:
            made.close()


class TestStop:
    def test_a_polite_agent_stops_at_the_stop_message(self, harness: Harness) -> None:
        """stop: the message and EOF; it exits 0; stopped, not a crash."""
        harness.start()
        harness.run(0.5)
        harness.supervisor.stop("a", "turn", harness.clock())
        harness.run(0.5)
        assert harness.state() == "stopped"
        assert harness.kinds()[-1] == "stopped"
        assert harness.restarts() == 0
        assert harness.launcher.exits[-1].returncode == 0

    def test_a_deaf_agent_gets_sigterm_at_half_the_timeout(self) -> None:
        """Ignores stop: SIGTERM at stop_timeout / 2 ends it; still a stop, not a crash."""
        made = make(Program(obeys_stop=False))
        try:
            made.start()
            made.run(0.5)
            made.supervisor.stop("a", "restart", made.clock())
            made.run(1.75)
            assert made.state() == "running"
            made.run(0.5)
            assert made.state() == "stopped"
            assert made.launcher.exits[-1].returncode == -signal.SIGTERM
            assert "crashed" not in made.kinds()
        finally:
            made.close()

    def test_an_agent_deaf_to_sigterm_is_killed_at_the_timeout(self) -> None:
        """Ignores stop and SIGTERM: SIGKILL at stop_timeout."""
        made = make(Program(obeys_stop=False, obeys_term=False))
        try:
            made.start()
            made.run(0.5)
            made.supervisor.stop("a", "shutdown", made.clock())
            made.run(3.5)
            assert made.state() == "running"
            made.run(1.0)
            assert made.state() == "stopped"
            process_signals = [e.returncode for e in made.launcher.exits]
            assert process_signals == [-signal.SIGKILL]
        finally:
            made.close()

    def test_a_stop_during_backoff_cancels_the_restart(self) -> None:
        made = make(Program(exit_after=0.1))
        try:
            made.start()
            made.run(0.25)
            assert made.state() == "backoff"
            made.supervisor.stop("a", "died", made.clock())
            assert made.state() == "stopped"
        finally:
            made.close()


class TestMessagesAndLimits:
    def test_answers_reach_the_handler_and_hello_does_not(self) -> None:
        made = make(Program(answer=lambda data: data[-1] + 1))
        try:
            made.start()
            made.run(0.5)
            assert made.supervisor.send("a", {"type": "task", "id": "t1", "data": [1, 2]})
            made.run(0.5)
            assert made.messages == [("a", {"type": "answer", "id": "t1", "value": 3})]
        finally:
            made.close()

    def test_an_agent_killed_from_outside_is_a_crash(self, harness: Harness) -> None:
        harness.start()
        harness.run(0.5)
        harness.launcher.kill("a")
        harness.run(0.25)
        assert harness.kinds()[-2:] == ["crashed", "restarted"]

    def test_an_agent_whose_host_is_lost_is_no_crash(self, harness: Harness) -> None:
        """A cluster node that dies takes its agents: each is started again at once,
        without backoff, and no crash is counted against it."""
        harness.start()
        harness.run(0.5)
        for _ in range(SETTINGS.max_restarts + 2):  # more than would disable a crasher
            harness.launcher.kill("a", lost="node n1 lost")
            harness.run(0.25)
            assert harness.kinds()[-1:] == ["stopped"]
            assert harness.state() == "stopped"
            assert harness.supervisor.ready_to_restart("a", harness.clock())
            assert harness.start()
            harness.run(0.5)
        assert harness.state() == "running" and harness.restarts() == 0

    @pytest.mark.parametrize(("program", "what"), [
        (Program(processes=5), "processes"),
        (Program(rss=200 << 20), "memory"),
    ], ids=["processes", "memory"])
    def test_over_a_limit_is_killed_and_logged(self, program: Program, what: str) -> None:
        made = make(program)
        try:
            made.start()
            made.run(0.5)
            made.supervisor.monitor(made.clock())
            made.run(0.25)
            events = made.supervisor.drain_events()
            limits = [dict(e.data)["what"] for e in events if e.kind == "limit"]
            assert limits == [what]
            assert [e.kind for e in events][-2:] == ["crashed", "restarted"]
        finally:
            made.close()

    def test_shutdown_stops_polite_agents_at_once(self) -> None:
        made = make(Program())
        try:
            for agent_id in ("a", "b", "c"):
                made.start(agent_id)
            made.run(0.5)
            made.supervisor.shutdown(made.clock(), SETTINGS.stop_timeout)
            assert made.supervisor.alive() == []
            assert [e.returncode for e in made.launcher.exits] == [0, 0, 0]
            assert "crashed" not in made.kinds()
        finally:
            made.close()

    def test_shutdown_on_a_clock_nobody_moves_kills_what_is_left(self) -> None:
        made = make(Program(obeys_stop=False, obeys_term=False))
        try:
            made.start()
            made.run(0.5)
            made.supervisor.shutdown(made.clock(), SETTINGS.stop_timeout)
            assert made.supervisor.alive() == []
            assert [e.returncode for e in made.launcher.exits] == [-signal.SIGKILL]
        finally:
            made.close()

    def test_output_for_a_stuck_agent_is_bounded(self) -> None:
        """An agent that never reads: its pipe fills, then sends are refused, not queued."""
        made = make(Program(reads_stdin=False))
        try:
            made.start()
            made.run(0.5)
            task = {"type": "task", "id": "t", "data": list(range(1000))}
            sent = 0
            while made.supervisor.send("a", task) and sent < 10_000:
                sent += 1
            assert 0 < sent < 10_000
            assert not made.supervisor.send("a", task)
        finally:
            made.close()

    def test_monitor_leaves_an_agent_being_stopped_alone(self) -> None:
        made = make(Program(rss=200 << 20, obeys_stop=False))
        try:
            made.start()
            made.run(0.5)
            made.supervisor.stop("a", "turn", made.clock())
            made.supervisor.monitor(made.clock())
            assert "limit" not in made.kinds()
        finally:
            made.close()

    def test_shutdown_stops_everyone(self) -> None:
        """Deaf agents too: shutdown escalates until every process is gone."""
        made = make(Program(obeys_stop=False, obeys_term=False))
        try:
            for agent_id in ("a", "b", "c"):
                made.start(agent_id)
            made.run(0.5)
            made.clock.tick = 0.01  # shutdown waits on the clock: let it move
            made.supervisor.shutdown(made.clock(), SETTINGS.stop_timeout)
            assert made.supervisor.alive() == []
            assert sorted(e.agent_id for e in made.launcher.exits) == ["a", "b", "c"]
            assert {e.returncode for e in made.launcher.exits} == {-signal.SIGKILL}
        finally:
            made.close()

    def test_changed_records_are_reported_once(self, harness: Harness) -> None:
        harness.start()
        assert harness.supervisor.take_changed() == {"a"}
        assert harness.supervisor.take_changed() == set()
        harness.run(0.5)  # hello
        assert harness.supervisor.take_changed() == {"a"}


def _as_dict(settings: SupervisorSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in SupervisorSettings.__dataclass_fields__}


def test_a_trickle_of_garbage_is_one_event_a_pass() -> None:
    """Malformed lines are counted as they come and reported once a pass, with the count."""
    made = make(Program(garbage=3))
    try:
        made.start()
        made.run(2.0)  # eight steps of three lines, and the clock reads between them
        made.supervisor.monitor(made.clock())
        events = [e for e in made.supervisor.drain_events() if e.kind == "malformed"]
        assert len(events) == 1
        count = dict(events[0].data)["count"]
        assert isinstance(count, int) and count >= 24
        made.supervisor.monitor(made.clock())  # nothing new since: nothing said
        assert "malformed" not in made.kinds()
    finally:
        made.close()


def test_cpu_over_the_whole_agent_is_a_limit() -> None:
    """CPU is summed over an agent's processes by the launcher; past the limit: killed."""
    settings = SupervisorSettings(**{**_as_dict(SETTINGS), "cpu_seconds": 3.0})
    made = make(Program(cpu_per_second=2.0), settings)
    try:
        made.start()
        made.run(1.0)
        made.supervisor.monitor(made.clock())
        assert "limit" not in made.kinds()
        made.run(1.0)  # 2 s of life at 2 CPU seconds a second
        made.supervisor.monitor(made.clock())
        made.run(0.25)
        events = made.supervisor.drain_events()
        assert [dict(e.data)["what"] for e in events if e.kind == "limit"] == ["cpu"]
        assert [e.kind for e in events][-2:] == ["crashed", "restarted"]
    finally:
        made.close()
