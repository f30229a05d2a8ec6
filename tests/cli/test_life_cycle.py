"""End-to-end: ``evolve life-cycle`` as a real process, with real signals and agents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import psutil
import pytest

from evolve_ai.testing import evolve_command, run_evolve, status_json

FAST = """
[lifecycle]
interval = 0.1
[supervisor]
stop_timeout = 2.0
backoff_initial = 0.2
backoff_max = 1.0
max_restarts = 3
stable_after = 30.0
"""


def configure(root: Path, extra: str = FAST) -> None:
    """Append settings to the workspace's evolve.toml (tables merged by hand)."""
    import tomlkit

    document = tomlkit.parse((root / "evolve.toml").read_text())
    for name, table in tomlkit.parse(extra).items():
        if isinstance(table, dict):
            for key, value in table.items():
                document[name][key] = value
        else:
            document[name] = table
    (root / "evolve.toml").write_text(tomlkit.dumps(document))


def agent_processes(root: Path) -> list[psutil.Process]:
    """Processes whose working directory is inside this workspace's agents/."""
    found = []
    agents = str(root / "agents")
    for process in psutil.process_iter(["pid"]):
        try:
            if process.cwd().startswith(agents):
                found.append(process)
        except psutil.Error:
            continue
    return found


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*evolve_command(), "--root", str(root), "life-cycle", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def events(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (root / "logs" / "evolve.jsonl").read_text()
            .splitlines()]


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "ws"
    assert run_evolve(root, "init", "12", "--seed", "7").returncode == 0
    configure(root, FAST + "[population]\nsize = 12\n")
    yield root
    for process in agent_processes(root):  # never leak into other tests
        process.kill()


def test_once_evaluates_and_leaves_no_process(workspace: Path) -> None:
    result = run_evolve(workspace, "life-cycle", "--once", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
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
    [sandbox] = [e for e in events(workspace) if e["event"] in ("sandbox", "sandbox_degraded")]
    if os.geteuid() == 0:  # root can always make namespaces and cgroups here
        assert (sandbox["sandbox"], sandbox["processes"]) == ("namespaces", "pids cgroup")
    else:
        assert isinstance(sandbox["processes"], str)


def test_sigterm_with_40_agents_running_exits_0_and_leaves_none(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    assert run_evolve(root, "init", "40", "--seed", "2").returncode == 0
    configure(root, FAST + "[population]\nsize = 40\n")
    proc = start(root)
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
    proc = start(workspace)
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
    proc = start(workspace)
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
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_sighup_reloads_and_refuses_a_bad_file(workspace: Path) -> None:
    proc = start(workspace)
    try:
        wait_until(lambda: status_json(workspace)["counts"]["running"] == 12, 30, "running")
        config = workspace / "evolve.toml"
        good = config.read_text()
        config.write_text(good + "\n[bogus]\nkey = 1\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(e["event"] == "reload_refused" for e in events(workspace)), 10,
                   "refusal")
        config.write_text(good.replace("interval = 0.1", "interval = 0.2"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(e["event"] == "config_reloaded" for e in events(workspace)), 10,
                   "reload")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_bad_config_stops_before_anything_runs(workspace: Path) -> None:
    (workspace / "evolve.toml").write_text("[lifecycle]\ninterval = 'soon'\n")
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
    configure(workspace, "[selection]\nevery = 2\n[population]\nsize = 12\n")
    result = run_evolve(workspace, "life-cycle", "--generations", "3", "--seed", "4")
    assert result.returncode == 0, result.stderr
    status = status_json(workspace)
    assert status["generation"] == 3
    assert [h["generation"] for h in status["history"]] == [0, 1, 2, 3]
    assert all(h["population"] == 12 for h in status["history"])
    assert all(h["births"] == h["deaths"] for h in status["history"][1:])
    assert any(e["event"] == "generation" for e in events(workspace))
    assert agent_processes(workspace) == []


def test_hooks_that_raise_or_hang_never_stop_the_loop(workspace: Path, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "badhooks.py").write_text(
        "import time\n"
        "def explode(event):\n    raise ValueError('hook bug')\n"
        "def hang(event):\n    time.sleep(3600)\n")
    configure(workspace, 'hooks = ["badhooks:explode", "badhooks:hang"]\nhook_timeout = 0.3\n'
                         "[selection]\nevery = 2\n")
    result = run_evolve(workspace, "life-cycle", "--generations", "2",
                        env={"PYTHONPATH": str(hooks)}, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = {e["event"] for e in events(workspace)}
    assert {"hook_failed", "hook_timeout", "generation"} <= seen
    assert status_json(workspace)["generation"] == 2
