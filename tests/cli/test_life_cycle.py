"""End-to-end: ``evolve life-cycle`` as a real process, with real signals and agents."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from evolve_ai.testing import (
    FAST_SETTINGS,
    agent_processes,
    init_workspace,
    read_events,
    run_evolve,
    set_config,
    start_life_cycle,
    status_json,
    stop_life_cycle,
    wait_until,
)


@pytest.fixture
def workspace(open_path: Path) -> Iterator[Path]:
    root = init_workspace(open_path / "ws", 12, seed=7,
                          settings={**FAST_SETTINGS, "population.size": 12})
    yield root
    for process in agent_processes(root):  # never leak into other tests
        process.kill()


def test_once_evaluates_and_leaves_no_process(workspace: Path) -> None:
    result = run_evolve(workspace, "life-cycle", "--once", "--seed", "1")
    assert result.returncode == 0, result.stderr
    # Quiet but for the one warning a root orchestrator gives where agents cannot get
    # uids of their own (this machine's Python may live where they cannot reach it).
    assert all("sandbox_degraded" in line for line in result.stderr.splitlines())
    status = status_json(workspace)
    assert status["counts"]["active"] == 12
    assert status["counts"]["running"] == 0
    assert status["fitness"]["mean"] is not None
    assert 0.0 <= status["fitness"]["max"] <= 1.0
    assert agent_processes(workspace) == []
    shown = json.loads(run_evolve(workspace, "show", next((workspace / "agents").iterdir()).name,
                                  "--json").stdout)
    assert shown["evaluations"] > 0
    assert shown["pid"] is None
    # How agents were confined is said once, in the log.
    [sandbox] = [e for e in read_events(workspace)
                 if e["event"] in ("sandbox", "sandbox_degraded")]
    if os.geteuid() == 0:  # root can always make namespaces and cgroups here
        assert (sandbox["sandbox"], sandbox["processes"]) == ("namespaces", "pids cgroup")
        said = status_json(workspace)["sandbox"]  # and status says it too
        assert said == {k: sandbox[k] for k in ("sandbox", "processes", "memory", "uids")}
        text = run_evolve(workspace, "status").stdout
        assert (f"sandbox     namespaces; processes: pids cgroup; memory: memory cgroup; "
                f"uids: {sandbox['uids']}") in text
        owners = {(a.stat().st_uid, a.stat().st_mode & 0o777)
                  for a in (workspace / "agents").iterdir()}
        if sandbox["uids"] == "one per agent":  # the workspace and Python reachable
            assert len(owners) == 12 and all(uid >= 200_000 and mode == 0o700
                                             for uid, mode in owners)
        else:  # and it says why not
            assert sandbox["uids"].startswith("evolve's own: ")
            assert "closed to other users" in sandbox["uids"]
            assert {uid for uid, _ in owners} == {0}
    else:
        assert isinstance(sandbox["processes"], str)


def test_sigterm_with_40_agents_running_exits_0_and_leaves_none(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 40, seed=2,
                          settings={**FAST_SETTINGS, "population.size": 40})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["counts"]["running"] == 40, 30, "40 running")
        assert len(agent_processes(root)) >= 40
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - began < 2.0 + 3.0  # stop_timeout plus saving
    finally:
        proc.kill()
    assert agent_processes(root) == []
    status = status_json(root)
    assert status["counts"]["running"] == 0
    assert status["counts"]["active"] == 40


def test_kill_9_then_restart_resumes(workspace: Path) -> None:
    genomes = {p.name: (p / "genome.bin").read_bytes() for p in (workspace / "agents").iterdir()}
    proc = start_life_cycle(workspace)
    wait_until(lambda: status_json(workspace)["counts"]["running"] == 12, 30, "12 running")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # every agent dies with the orchestrator (parent-death signal, EOF on stdin)
    wait_until(lambda: agent_processes(workspace) == [], 5, "orphans to die")
    result = run_evolve(workspace, "life-cycle", "--once")
    assert result.returncode == 0, result.stderr
    status = status_json(workspace)
    assert status["counts"]["active"] == 12
    assert status["counts"]["quarantined"] == 0 and status["counts"]["disabled"] == 0
    for agent in (workspace / "agents").iterdir():
        data = msgpack.unpackb((agent / "genome.bin").read_bytes())
        assert data["schema"] == 1  # whole, whoever wrote it last
    assert set(genomes) == {p.name for p in (workspace / "agents").iterdir()}
    assert agent_processes(workspace) == []


def test_a_second_life_cycle_is_refused_with_75(workspace: Path) -> None:
    proc = start_life_cycle(workspace)
    try:
        wait_until(lambda: (workspace / "workspace" / "evolve.lock").exists()
                   and "life-cycle" in (workspace / "workspace" / "evolve.lock").read_text(),
                   10, "the lock")
        began = time.monotonic()
        second = run_evolve(workspace, "life-cycle")
        assert second.returncode == 75
        assert time.monotonic() - began < 5
        assert second.stderr.count("\n") == 1
        assert "in use by life-cycle" in second.stderr
    finally:
        stop_life_cycle(proc)


def test_sighup_reloads_and_refuses_a_bad_file(workspace: Path) -> None:
    proc = start_life_cycle(workspace)
    try:
        wait_until(lambda: status_json(workspace)["counts"]["running"] == 12, 30, "running")
        set_config(workspace, {"bogus.key": 1})
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(e["event"] == "reload_refused" for e in read_events(workspace)),
                   10, "refusal")
        set_config(workspace, {"bogus": None, "lifecycle.interval": 0.2})
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(e["event"] == "config_reloaded" for e in read_events(workspace)),
                   10, "reload")
        assert proc.poll() is None
    finally:
        stop_life_cycle(proc)


def test_bad_config_stops_before_anything_runs(workspace: Path) -> None:
    set_config(workspace, {"lifecycle.interval": "soon"})
    result = run_evolve(workspace, "life-cycle", "--once")
    assert result.returncode == 1
    assert "lifecycle.interval must be a number" in result.stderr
    assert agent_processes(workspace) == []


def test_usage_errors(workspace: Path) -> None:
    assert run_evolve(workspace, "life-cycle", "--once", "--generations", "2").returncode == 2
    assert run_evolve(workspace, "life-cycle", "--generations", "0").returncode == 2
    assert run_evolve(workspace, "life-cycle", "--interval", "-1").returncode == 2


def test_life_cycle_outside_a_workspace(tmp_path: Path) -> None:
    result = run_evolve(tmp_path, "life-cycle", "--once")
    assert result.returncode == 1
    assert "run 'evolve init N' first" in result.stderr
    assert not (tmp_path / "workspace").exists()


def test_generations_are_counted_in_history(workspace: Path) -> None:
    set_config(workspace, {"selection.every": 2, "population.size": 12})
    result = run_evolve(workspace, "life-cycle", "--generations", "3", "--seed", "4")
    assert result.returncode == 0, result.stderr
    status = status_json(workspace)
    assert status["generation"] == 3
    assert [h["generation"] for h in status["history"]] == [0, 1, 2, 3]
    assert all(h["population"] == 12 for h in status["history"])
    assert all(h["births"] == h["deaths"] for h in status["history"][1:])
    assert any(e["event"] == "generation" for e in read_events(workspace))
    # each generation's cost in tasks, all of them scored to some agent (dead ones included)
    tasks = [h["tasks"] for h in status["history"]]
    assert tasks[0] is None and all(t > 0 for t in tasks[1:])
    with sqlite3.connect(workspace / "workspace" / "evolve.db") as db:
        scored = db.execute("SELECT sum(evaluations) FROM agents").fetchone()[0]
    assert sum(tasks[1:]) <= scored
    assert agent_processes(workspace) == []


def test_hooks_that_raise_or_hang_never_stop_the_loop(workspace: Path, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    seen_by_hook = tmp_path / "seen.jsonl"
    (hooks / "badhooks.py").write_text(
        "import json, time\n"
        f"def record(event):\n    open({str(seen_by_hook)!r}, 'a').write("
        "json.dumps(event['event']) + '\\n')\n"
        "def explode(event):\n    raise ValueError('hook bug')\n"
        "def hang(event):\n    time.sleep(3600)\n")
    set_config(workspace, {"hooks": ["badhooks:record", "badhooks:explode", "badhooks:hang"],
                           "hook_timeout": 0.3, "selection.every": 2})
    result = run_evolve(workspace, "life-cycle", "--generations", "2",
                        env={"PYTHONPATH": str(hooks)}, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = {e["event"] for e in read_events(workspace)}
    assert {"hook_failed", "hook_timeout", "generation"} <= seen
    assert status_json(workspace)["generation"] == 2
    # A failing hook is said once a generation (and at the end), with its count.
    failed = read_events(workspace, "hook_failed")
    assert 1 <= len(failed) <= 3
    assert all(e["hook"] == "badhooks:explode" and "hook bug" in e["last_error"]
               for e in failed)
    assert sum(e["count"] for e in failed) >= 1
    # Hooks hear the life cycle's own events too (those before the hang at least).
    heard = {json.loads(line) for line in seen_by_hook.read_text().splitlines()}
    assert "life_cycle_started" in heard
    # Without a hanging neighbour, a hook hears all of them, the last one included.
    seen_by_hook.unlink()
    set_config(workspace, {"hooks": ["badhooks:record"]})
    result = run_evolve(workspace, "life-cycle", "--generations", "1",
                        env={"PYTHONPATH": str(hooks)}, timeout=120)
    assert result.returncode == 0, result.stderr
    heard = {json.loads(line) for line in seen_by_hook.read_text().splitlines()}
    assert {"life_cycle_started", "generation", "life_cycle_stopped"} <= heard
