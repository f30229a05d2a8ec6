"""Template versions: the template changes, gains and loses modules while a population
runs; nobody is blamed, births take the newest version, agents migrate at a safe point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path

from evolve_ai.testing import (
    FAST_SETTINGS,
    init_workspace,
    read_events,
    run_evolve,
    start_life_cycle,
    status_json,
    stop_life_cycle,
    wait_until,
    write_template,
)

SOLVER = "def last(terms):\n    return terms[-1] if terms else None\n"
OLD = "def old(terms):\n    return None\n"
NOVELTY = "def fresh(terms):\n    return None\n"


def _show(root: Path, agent: str) -> dict[str, object]:
    shown: dict[str, object] = json.loads(run_evolve(root, "show", agent, "--json").stdout)
    return shown


def _versions(root: Path) -> dict[str, object]:
    result = run_evolve(root, "template", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def _kill_one_running(root: Path, template: str) -> str:
    """SIGKILL an agent that runs ``template``'s code; its id."""
    for agent in sorted((root / "agents").iterdir()):
        shown = _show(root, agent.name)
        if shown["process"] == "running" and shown["template"] == template and shown["pid"]:
            try:
                os.killpg(int(str(shown["pid"])), signal.SIGKILL)
            except ProcessLookupError:  # its turn ended meanwhile
                continue
            return agent.name
    raise AssertionError(f"no agent runs {template} any more")


def _replace(path: Path, text: str) -> None:
    """Write as an editor saves: the scanner never sees the file empty half-way (a
    write_text truncates first, and an empty module is a valid new version)."""
    temporary = path.parents[3] / f".{path.name}.new"  # outside agent_template/
    temporary.write_text(text)
    os.replace(temporary, path)


def test_the_template_changes_while_the_population_runs(tmp_path: Path) -> None:
    template = write_template(tmp_path / "tpl", {"solver": SOLVER, "legacy": OLD})
    root = init_workspace(tmp_path / "ws", 50, template=template, seed=3, settings={
        **FAST_SETTINGS, "selection.strategy": "truncation", "selection.every": 5,
        "lifecycle.max_running": 35})
    first = status_json(root)["template"]["newest"]
    package = root / "agent_template" / "src" / "agent"
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["counts"]["running"] == 35, 30, "35 running")
        # A module gained, one lost, one changed: one new version.
        _replace(package / "novelty.py", NOVELTY)
        (package / "legacy.py").unlink()
        _replace(package / "solver.py", SOLVER + "# a comment\n")
        wait_until(lambda: read_events(root, "template_changed"), 30, "the change seen")
        [changed] = read_events(root, "template_changed")
        second = changed["fingerprint"]
        assert changed["previous"] == first
        assert changed["files_added"] == ["src/agent/novelty.py"]
        assert changed["files_removed"] == ["src/agent/legacy.py"]
        assert changed["files_changed"] == ["src/agent/solver.py"]
        assert changed["genes_added"] == ["src/agent/novelty.py:fresh"]
        assert changed["genes_removed"] == ["src/agent/legacy.py:old"]
        # Idle agents (above max_running, waiting for their turn) move at once...
        wait_until(lambda: read_events(root, "migrated"), 30, "a first migration")
        # ...a running one at its next restart: kill one, it comes back on the new version.
        victim = _kill_one_running(root, first)
        wait_until(lambda: _show(root, victim)["template"] == second, 30, "victim migrated")
        directory = root / "agents" / victim / "src" / "agent"
        assert (directory / "novelty.py").read_text() == NOVELTY
        assert not (directory / "legacy.py").exists()
        assert (directory / "solver.py").read_text().endswith("# a comment\n")
        wait_until(lambda: any(e["template"] == second for e in read_events(root, "born")),
                   60, "a birth on the new version")
        # A broken change is refused once; the population runs on the version in force,
        # and status says so until it is fixed.
        _replace(package / "novelty.py", "def fresh(terms:\n")
        wait_until(lambda: read_events(root, "template_refused"), 30, "the refusal")
        assert proc.poll() is None
        assert "agent_template/ refused: " in run_evolve(root, "status").stdout
        assert "novelty.py" in status_json(root)["template"]["refused"]
        _replace(package / "novelty.py", NOVELTY)
        wait_until(lambda: status_json(root)["template"]["refused"] is None, 30, "fixed")
    finally:
        stop_life_cycle(proc)
    assert status_json(root)["counts"]["quarantined"] == 0
    assert read_events(root, "quarantined") == []
    # The genes the template lost stay in the genomes, unexpressed: no agent "mutated"
    # (this runtime never rewrites its genome), no score window reset.
    assert read_events(root, "mutated") == []
    [refused] = read_events(root, "template_refused")
    assert "novelty.py" in refused["reason"]
    versions = _versions(root)["versions"]
    assert isinstance(versions, list)
    assert [v["fingerprint"] for v in versions] == [first, second]
    assert versions[1]["newest"]
    assert sum(v["agents"] for v in versions) == status_json(root)["counts"]["active"]
    kept = root / "workspace" / "templates"
    assert sorted(p.name for p in kept.iterdir()) == sorted([first, second])
    assert (kept / first / "src" / "agent" / "legacy.py").read_text() == OLD
    diff = json.loads(run_evolve(root, "template", "--json", "--diff", first[:8],
                                 second[:8]).stdout)["diff"]
    assert diff["genes_added"] == ["src/agent/novelty.py:fresh"]
    text = run_evolve(root, "template").stdout
    assert second[:12] in text and "newest" in text
    shown = run_evolve(root, "template", "--diff", first[:8], second[:8]).stdout
    assert shown.splitlines()[0] == f"from {first[:12]} to {second[:12]}"
    assert "  + gene src/agent/novelty.py:fresh" in shown and "newest" not in shown
    same = run_evolve(root, "template", "--diff", first[:8], first[:8]).stdout
    assert "no difference" in same
    # An agent whose genome still names the lost module shows it as not its version's.
    for agent in (root / "agents").iterdir():
        data = _show(root, agent.name)
        if data["template"] == second and "legacy.py" in str(data["genome"]):
            assert "[src/agent/legacy.py]" in run_evolve(root, "show", agent.name).stdout
            break


def test_a_workspace_from_before_versions_adopts_its_template(tmp_path: Path) -> None:
    """Agents listed before versions were kept (no version recorded) take the template
    as it is; one whose kept version is lost is moved to the newest, not quarantined."""
    template = write_template(tmp_path / "tpl", {"solver": SOLVER, "legacy": OLD})
    root = init_workspace(tmp_path / "ws", 4, template=template, seed=3,
                          settings={**FAST_SETTINGS, "population.size": 4,
                                    "selection.strategy": "none"})
    with sqlite3.connect(root / "workspace" / "evolve.db") as db:
        db.execute("UPDATE agents SET template = NULL")
        db.execute("DELETE FROM templates")
    shutil.rmtree(root / "workspace" / "templates")
    result = run_evolve(root, "life-cycle", "--once")
    assert result.returncode == 0, result.stderr
    status = status_json(root)
    assert status["template"]["versions"] == 1
    assert status["counts"]["active"] == 4
    assert len(read_events(root, "migrated")) == 4  # to the version of their own files
    # Now lose the kept version and change the template: its agents still move.
    shutil.rmtree(root / "workspace" / "templates")
    (root / "agent_template" / "src" / "agent" / "legacy.py").unlink()
    result = run_evolve(root, "life-cycle", "--once")
    assert result.returncode == 0, result.stderr
    status = status_json(root)
    assert status["counts"]["active"] == 4 and status["template"]["versions"] == 2
    assert len(read_events(root, "migrated")) == 8
    assert not list((root / "agents").glob("*/src/agent/legacy.py"))


def test_a_template_put_back_as_it_was_is_the_newest_again(tmp_path: Path) -> None:
    template = write_template(tmp_path / "tpl", {"solver": SOLVER})
    root = init_workspace(tmp_path / "ws", 3, template=template, seed=3,
                          settings={**FAST_SETTINGS, "selection.strategy": "none"})
    first = status_json(root)["template"]["newest"]
    novelty = root / "agent_template" / "src" / "agent" / "novelty.py"
    novelty.write_text(NOVELTY)
    assert run_evolve(root, "life-cycle", "--once").returncode == 0
    second = status_json(root)["template"]["newest"]
    novelty.unlink()
    assert run_evolve(root, "life-cycle", "--once").returncode == 0
    status = status_json(root)
    assert second != first
    assert status["template"] == {"newest": first, "versions": 2, "refused": None}
    versions = _versions(root)["versions"]
    assert isinstance(versions, list)
    assert [(v["fingerprint"], v["newest"], v["agents"]) for v in versions] == [
        (first, True, 3), (second, False, 0)]
