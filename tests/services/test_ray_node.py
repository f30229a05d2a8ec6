"""The node actor's body without Ray: a real fork server, real agents, batched exchanges."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from evolve_ai.services.ray_node import READ_CAP, Batch, Node
from tests.services import launcher_agents as agents
from tests.services.test_forkserver_launcher import spec_for, write_agent

FLOOD = """\
import sys
print('{"type": "hello"}', flush=True)
sys.stdout.write("x" * (3 << 20) + "\\n")
sys.stdout.flush()
sys.stdin.read()
"""


@pytest.fixture
def node() -> Iterator[Node]:
    made = Node()
    yield made
    made.close()


def exchange_until(node: Node, done: object, *, output: dict[int, bytes] | None = None,
                   closing: list[int] | None = None,
                   signals: list[tuple[int, int]] | None = None,
                   timeout: float = 10.0) -> list[Batch]:
    """Exchanges (the head's news sent with the first) until ``done(batches)``."""
    batches: list[Batch] = []
    deadline = time.monotonic() + timeout
    first = True
    while time.monotonic() < deadline:
        batches.append(node.exchange((output or {}) if first else {},
                                     (closing or []) if first else [],
                                     (signals or []) if first else []))
        first = False
        if done(batches):  # type: ignore[operator]
            return batches
        time.sleep(0.01)
    raise AssertionError(f"not done in {timeout} s: {batches[-3:]}")


def said(batches: list[Batch], pid: int) -> bytes:
    return b"".join(b.output.get(pid, b"") for b in batches)


def test_bytes_travel_both_ways_in_batches_and_an_end_of_input_ends_the_agent(
        node: Node, tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "echo", agents.HELLO_ECHO)
    pid, created = node.spawn(spec_for(directory), str(tmp_path / "echo.log"))
    assert created > 0
    batches = exchange_until(node, lambda b: b"hello" in said(b, pid))
    batches = exchange_until(node, lambda b: b"one\ntwo\n" in said(b, pid),
                             output={pid: b"one\ntwo\n"})
    assert said(batches, pid) == b"one\ntwo\n"  # delivered once, in order
    batches = exchange_until(node, lambda b: any(b2.exits for b2 in b), closing=[pid])
    assert [e for b in batches for e in b.exits] == [(pid, 0)]
    assert node.exchange({pid: b"late\n"}, [], []) == Batch({}, [], [], {}, [])  # forgotten


def test_a_signal_travels_with_the_exchange(node: Node, tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "sleeper", agents.SLEEPER)
    pid, _ = node.spawn(spec_for(directory), str(tmp_path / "sleeper.log"))
    exchange_until(node, lambda b: b"ready" in said(b, pid))
    batches = exchange_until(node, lambda b: any(b2.exits for b2 in b),
                             signals=[(pid, signal.SIGKILL)])
    assert [e for b in batches for e in b.exits] == [(pid, -signal.SIGKILL)]


def test_a_flood_is_taken_a_bounded_slice_at_a_time(node: Node, tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "flood", FLOOD)
    pid, _ = node.spawn(spec_for(directory), str(tmp_path / "flood.log"))
    batches = exchange_until(node, lambda b: len(said(b, pid)) > 3 << 20)
    assert max(len(b.output.get(pid, b"")) for b in batches) <= READ_CAP
    assert said(batches, pid).count(b"x") == 3 << 20


def test_an_agent_gives_no_more_than_the_head_has_room_for(node: Node,
                                                           tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "flood", FLOOD)
    pid, _ = node.spawn(spec_for(directory), str(tmp_path / "flood.log"))
    exchange_until(node, lambda b: b"hello" in said(b, pid))
    batches = []
    for _ in range(20):
        batches.append(node.exchange({}, [], [], {pid: 1000}))
        time.sleep(0.02)  # the agent writes on meanwhile
    assert sum(len(b.output.get(pid, b"")) for b in batches) >= 10 * 1000
    assert all(len(b.output.get(pid, b"")) <= 1000 for b in batches)


def test_bytes_for_an_agent_that_does_not_read_are_held_and_counted(
        node: Node, tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "deaf", FLOOD)  # never reads stdin until its flood
    pid, _ = node.spawn(spec_for(directory), str(tmp_path / "deaf.log"))
    exchange_until(node, lambda b: b"hello" in said(b, pid))
    batch = node.exchange({pid: b"x" * (1 << 20)}, [], [], {pid: 0})
    assert 0 < batch.backlog[pid] <= 1 << 20  # a pipe's worth went in, the rest is held


def test_a_node_cut_off_from_the_head_ends_its_agents(tmp_path: Path) -> None:
    """No exchange for the watchdog's time (the head lost it, maybe wrongly): the node
    ends its agents, so that no copy runs beside the ones the head starts elsewhere."""
    node = Node(watchdog=1.0)
    try:
        directory = write_agent(tmp_path / "sleeper", agents.SLEEPER)
        pid, _ = node.spawn(spec_for(directory), str(tmp_path / "sleeper.log"))
        exchange_until(node, lambda b: b"ready" in said(b, pid))
        time.sleep(3.0)  # silence from the head
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    finally:
        node.close()


def test_the_agents_stderr_goes_to_the_log_path(node: Node, tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "crash", agents.CRASH)
    log = tmp_path / "crash.log"
    pid, _ = node.spawn(spec_for(directory), str(log))
    batches = exchange_until(node, lambda b: any(b2.exits for b2 in b))
    assert [e for b in batches for e in b.exits] == [(pid, 1)]
    assert "ValueError: boom" in log.read_text()


def test_the_node_reports_how_it_confines_agents(node: Node) -> None:
    status = node.status()
    assert status.sandbox == node._launcher.sandbox_status != "not started"
    assert status.pid > 0 and status.host
