"""The population on a real Ray cluster of three loopback nodes (``cluster.backend``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil

from evolve_ai.testing import (
    FAST_SETTINGS,
    agent_processes,
    init_workspace,
    read_events,
    run_evolve,
    start_life_cycle,
    status_json,
    stop_life_cycle,
    wait_until,
    write_genome,
    write_template,
)
from tests.cli.test_life_cycle_failures import KILLER, SOLVER
from tests.cluster.conftest import on_cluster, ray_installed


def nodes(root: Path) -> dict[str, int]:
    return dict(status_json(root).get("nodes") or {})


def late_means(root: Path, count: int = 3) -> float:
    """The mean of the last ``count`` generations' mean fitness."""
    history = [float(h["mean"]) for h in status_json(root)["history"]
               if h["mean"] is not None]
    return sum(history[-count:]) / len(history[-count:])


def test_the_population_spreads_over_the_nodes_and_evolves_as_it_does_locally(
        ray_cluster: Any, tmp_path: Path) -> None:
    settings = {**FAST_SETTINGS, "selection.every": 4}
    local = init_workspace(tmp_path / "local", 60, seed=7, settings=settings)
    remote = init_workspace(tmp_path / "ray", 60, seed=7,
                            settings={**settings, **on_cluster(ray_cluster)})
    result = run_evolve(local, "life-cycle", "--generations", "8", "--seed", "7")
    assert result.returncode == 0, result.stderr
    proc = start_life_cycle(remote, "--generations", "8", "--seed", "7")
    try:
        wait_until(lambda: len(nodes(remote)) == 3 and min(nodes(remote).values()) > 0, 90,
                   "agents on each of the three nodes")
        assert sum(nodes(remote).values()) <= 60
        shown = run_evolve(remote, "status").stdout
        assert "nodes       " in shown and all(name in shown for name in nodes(remote))
        assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        stop_life_cycle(proc)
    joined = read_events(remote, "node_joined")
    assert len(joined) == 3 and {e["sandbox"] for e in joined} == {"namespaces"}
    assert status_json(remote)["sandbox"]["sandbox"] == "namespaces"
    mine, theirs = late_means(local), late_means(remote)
    first = status_json(remote)["history"][1]["mean"]
    assert theirs > first + 0.1, (first, theirs)  # it evolved on the cluster too
    assert abs(mine - theirs) <= 0.12, (mine, theirs)
    assert agent_processes(remote) == []


def processes_in(directory: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.cwd().startswith(str(directory) + os.sep):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_without_a_shared_file_system_agents_run_from_their_nodes_copies(
        ray_cluster: Any, tmp_path: Path) -> None:
    """Each node lays its agents out under a directory of its own; genomes the agents
    rewrite there come back to the head, which scans, rewires and selects as ever."""
    nodes_dir = tmp_path / "nodes"
    root = init_workspace(tmp_path / "ws", 12, seed=9, settings={
        **FAST_SETTINGS, "selection.every": 4, **on_cluster(ray_cluster),
        "cluster.shared_files": False, "cluster.node_dir": str(nodes_dir)})
    proc = start_life_cycle(root, "--generations", "3", "--seed", "9")
    try:
        wait_until(lambda: len(processes_in(nodes_dir)) >= 12, 90,
                   "twelve agents running in the nodes' directories")
        assert agent_processes(root) == []  # none in the head's
        assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            stop_life_cycle(proc)
    status = status_json(root)
    assert status["generation"] == 3 and status["counts"]["active"] == 12
    # Agents mutated themselves on their nodes; the head saw it in its own directories.
    assert read_events(root, "mutated")
    # the nodes cleared what they laid out
    assert not any(path.is_file() for path in nodes_dir.rglob("*"))
    assert processes_in(nodes_dir) == []


def test_a_lost_node_costs_its_agents_a_restart_elsewhere_and_nothing_more(
        ray_cluster: Any, tmp_path: Path) -> None:
    extra = ray_cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray_cluster.wait_for_nodes()
    label = extra.node_id[:8]
    root = init_workspace(tmp_path / "ws", 24, seed=3, settings={
        **FAST_SETTINGS, "selection.every": 100_000, **on_cluster(ray_cluster)})
    genomes = {p.name: (p / "genome.bin").read_bytes() for p in (root / "agents").iterdir()}
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["counts"]["running"] == 24
                   and any(label in name for name in nodes(root)), 90,
                   "24 agents running, some on the extra node")
        [on_it] = [count for name, count in nodes(root).items() if label in name]
        assert on_it > 0
        ray_cluster.remove_node(extra, allow_graceful=False)
        wait_until(lambda: read_events(root, "node_lost"), 60, "the node's loss noticed")
        wait_until(lambda: status_json(root)["counts"]["running"] == 24
                   and not any(label in name for name in nodes(root)), 90,
                   "every agent running again on the other nodes")
        [lost] = read_events(root, "node_lost")
        assert lost["agents"] == on_it
        counts = status_json(root)["counts"]
        assert (counts["active"], counts["dead"], counts["disabled"]) == (24, 0, 0)
        # Its agents were stopped by the loss, not crashed: no backoff, nothing counted.
        stopped = [e for e in read_events(root, "stopped") if "lost" in str(e.get("reason"))]
        assert len(stopped) == on_it
        assert [e for e in read_events(root, "crashed") if e.get("returncode") == -9] == []
    finally:
        stop_life_cycle(proc)
    assert proc.returncode == 0
    # No genome was lost or rewritten by the orchestrator (agents rewrite their own only
    # on feedback: the same agents, each with a readable genome, are all still there).
    assert {p.name for p in (root / "agents").iterdir()} == set(genomes)
    assert all((root / "agents" / a / "genome.bin").stat().st_size > 0 for a in genomes)
    assert agent_processes(root) == []


def test_kill_9_of_the_orchestrator_then_a_restart_resumes_on_the_cluster(
        ray_cluster: Any, tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 12, seed=5, settings={
        **FAST_SETTINGS, "selection.every": 4, **on_cluster(ray_cluster)})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["generation"] >= 1
                   and status_json(root)["counts"]["running"] == 12, 90,
                   "a generation closed with 12 running")
        agents = agent_processes(root)
        assert agents
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # Its node actors, their fork servers and every agent go with it.
        _, alive = psutil.wait_procs(agents, timeout=60)
        assert alive == []
    finally:
        if proc.poll() is None:
            stop_life_cycle(proc)
    generation = status_json(root)["generation"]
    result = run_evolve(root, "-q", "life-cycle", "--generations", "2", "--seed", "5")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # quiet under cron: nothing from Ray either
    status = status_json(root)
    assert status["generation"] == generation + 2
    assert status["counts"]["active"] == 12
    assert len(read_events(root, "node_joined")) >= 6  # both runs found the three nodes
    assert agent_processes(root) == []


def test_a_hostile_agent_on_a_node_harms_nobody(ray_cluster: Any, tmp_path: Path) -> None:
    """In its own pid namespace on its node, an agent that kills everything it sees
    reaches neither its siblings, nor the node's actor, nor the orchestrator."""
    template = write_template(tmp_path / "tpl", {"solver": SOLVER, "killer": KILLER})
    root = init_workspace(tmp_path / "ws", 6, template=template, seed=1, settings={
        **FAST_SETTINGS, "population.size": 6, "selection.strategy": "none",
        **on_cluster(ray_cluster)})
    agents = sorted(p.name for p in (root / "agents").iterdir())
    for agent in agents:
        write_genome(root / "agents" / agent, {"src/agent/solver.py": ["last"]})
    write_genome(root / "agents" / agents[0], {"src/agent/killer.py": ["f"],
                                               "src/agent/solver.py": ["last"]})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: len(read_events(root, "pass_done")) >= 15
                   and read_events(root, "started", agent=agents[0]), 90,
                   "fifteen passes with the killer started")
        assert proc.poll() is None
        assert status_json(root)["sandbox"]["sandbox"] == "namespaces"  # so it is pid 1
        assert read_events(root, "node_lost") == []
        for sibling in agents[1:]:
            assert read_events(root, "crashed", agent=sibling) == []
        assert status_json(root)["counts"]["running"] >= 5
    finally:
        stop_life_cycle(proc)
    assert proc.returncode == 0


def test_an_agent_that_dies_at_once_on_a_node_is_seen_dying_each_time(
        ray_cluster: Any, tmp_path: Path) -> None:
    """Its exit can reach the head before its launch call returns: it is kept until the
    launch claims it, so the agent is restarted and disabled as on one machine, never
    left for dead as a process that says nothing."""
    template = write_template(tmp_path / "tpl", {"solver": SOLVER,
                                                 "crasher": "raise SystemExit(3)\n"
                                                            "def f(terms):\n    return 0\n"})
    root = init_workspace(tmp_path / "ws", 4, template=template, seed=1, settings={
        **FAST_SETTINGS, "population.size": 4, "selection.strategy": "none",
        "supervisor.max_restarts": 3, **on_cluster(ray_cluster)})
    agents = sorted(p.name for p in (root / "agents").iterdir())
    for agent in agents:
        write_genome(root / "agents" / agent, {"src/agent/solver.py": ["last"]})
    write_genome(root / "agents" / agents[0], {"src/agent/crasher.py": ["f"],
                                               "src/agent/solver.py": ["last"]})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: read_events(root, "disabled", agent=agents[0]), 90,
                   "the crasher disabled after its restarts")
        crashes = read_events(root, "crashed", agent=agents[0])
        assert len(crashes) >= 3 and {e["returncode"] for e in crashes} == {3}
        assert read_events(root, "hung", agent=agents[0]) == []
        assert status_json(root)["counts"]["running"] == 3
    finally:
        stop_life_cycle(proc)


def test_an_unreachable_cluster_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    ray_installed()
    root = init_workspace(tmp_path / "ws", 3, seed=1, settings={
        "cluster.backend": "ray", "cluster.address": "127.0.0.1:9"})
    before = status_json(root)
    result = run_evolve(root, "life-cycle", "--once", timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "evolve: error: cannot reach the Ray cluster at 127.0.0.1:9: "
        "[Errno 111] Connection refused"]
    assert status_json(root)["counts"] == before["counts"]
    assert agent_processes(root) == []
