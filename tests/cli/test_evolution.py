"""Darwin end to end: selection, reproduction, death, lineage, mutation pick-up."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import msgpack

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
    write_genome,
    write_template,
)

QUICK = {**FAST_SETTINGS, "selection.every": 2, "selection.min_evaluations": 4,
         "evaluation.tasks_per_pass": 4}


def run(root: Path, strategy: str, generations: int, seed: str = "11") -> dict[str, Any]:
    """Run the life cycle with a population the size of the workspace's."""
    size = sum(1 for _ in (root / "agents").iterdir())
    set_config(root, {**QUICK, "population.size": size, "selection.strategy": strategy})
    result = run_evolve(root, "life-cycle", "--generations", str(generations), "--seed", seed)
    assert result.returncode == 0, result.stderr
    return status_json(root)


def test_selection_raises_fitness_above_the_control(tmp_path: Path) -> None:
    """Two populations from one seed: truncation ends fitter than no selection."""
    finals = {}
    for strategy in ("truncation", "none"):
        root = init_workspace(tmp_path / strategy, 24, seed=5)
        status = run(root, strategy, 8)
        history = status["history"]
        assert [h["generation"] for h in history] == list(range(9))
        # A generation whose agents all carry a variant not yet measured has no mean
        # (agents started together mutate in step): the last three measured ones.
        measured = [h["mean"] for h in history if h["mean"] is not None][-3:]
        assert len(measured) == 3, history
        finals[strategy] = sum(measured) / 3
        if strategy == "none":
            assert all(h["births"] == 0 and h["deaths"] == 0 for h in history[1:])
        else:
            assert sum(h["deaths"] for h in history[1:]) > 0
            assert all(h["population"] == 24 for h in history)
        assert agent_processes(root) == []
    assert finals["truncation"] > finals["none"] + 0.05, finals


def test_births_record_parents_and_the_dead_stay_queryable(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 16, seed=3)
    status = run(root, "truncation", 3)
    assert status["counts"]["dead"] > 0
    db = sqlite3.connect(root / "workspace" / "evolve.db")
    dead = [row[0] for row in db.execute("SELECT id FROM agents WHERE status = 'dead'")]
    children = db.execute("SELECT id, parent, generation, genome_hash FROM agents "
                          "WHERE parent IS NOT NULL").fetchall()
    assert children
    for agent_id in dead:
        assert not (root / "agents" / agent_id).exists()
        assert not (root / "logs" / "agents" / f"{agent_id}.log").exists()  # nor its log
        shown = json.loads(run_evolve(root, "show", agent_id, "--json").stdout)
        assert shown["status"] == "dead"
        assert shown["genome"]["schema"] == 1  # the genome outlives the agent
    born = {e["agent"]: e for e in read_events(root) if e["event"] == "born"}
    for child, parent, generation, _ in children:
        assert born[child]["parent"] == parent
        assert generation >= 1
        line = json.loads(run_evolve(root, "lineage", child, "--json").stdout)
        assert [a["id"] for a in line["ancestry"]][:2] == [child, parent]
        assert line["ancestry"][-1]["parent"] is None  # back to a founder
        assert child in json.loads(run_evolve(root, "lineage", parent, "--json")
                                   .stdout)["children"]
    died = [e for e in read_events(root) if e["event"] == "died"]
    assert {e["agent"] for e in died} == set(dead)
    unheld = db.execute("SELECT count(*) FROM genomes WHERE hash NOT IN "
                        "(SELECT genome_hash FROM agents)").fetchone()[0]
    assert unheld == 0  # variants agents moved on from are not kept
    elite = sorted((root / "workspace" / "commons" / "elite").glob("*.bin"))
    assert elite and all(msgpack.unpackb(p.read_bytes())["schema"] == 1 for p in elite)


def test_the_orchestrator_never_rewrites_a_genome(tmp_path: Path) -> None:
    """With agents that never mutate, every genome on disk is as born: bytes and inode."""
    template = write_template(tmp_path / "tpl")  # the minimal runtime never mutates
    root = init_workspace(tmp_path / "ws", 12, template=template, seed=2)
    before = {p.name: ((p / "genome.bin").read_bytes(), (p / "genome.bin").stat().st_ino)
              for p in (root / "agents").iterdir()}
    run(root, "truncation", 3)
    db = sqlite3.connect(root / "workspace" / "evolve.db")
    stored = dict(db.execute("SELECT agents.id, genomes.data FROM agents JOIN genomes "
                             "ON genomes.hash = agents.genome_hash WHERE status != 'dead'"))
    for agent in (root / "agents").iterdir():
        data = (agent / "genome.bin").read_bytes()
        if agent.name in before:
            assert (data, (agent / "genome.bin").stat().st_ino) == before[agent.name]
        assert data == stored[agent.name]  # a child carries its parent's genome, unchanged


def test_an_agents_own_mutation_is_picked_up_resynced_and_restarted(tmp_path: Path) -> None:
    template = write_template(tmp_path / "tpl")
    root = init_workspace(tmp_path / "ws", 3, template=template, seed=4, settings={
        **FAST_SETTINGS, "population.size": 3, "selection.strategy": "none"})
    agent = sorted((root / "agents").iterdir())[0]
    write_genome(agent, {"src/agent/alpha.py": ["last"]})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["counts"]["running"] == 3, 30, "running")
        first_pid = json.loads(run_evolve(root, "show", agent.name, "--json").stdout)["pid"]
        write_genome(agent, {"src/agent/beta.py": ["step"], "src/agent/alpha.py": ["double"]})
        wait_until(lambda: sum(e["event"] == "mutated" and e["agent"] == agent.name
                               for e in read_events(root)) == 2, 10, "mutated")
        wait_until(lambda: json.loads(run_evolve(root, "show", agent.name, "--json").stdout)
                   ["pid"] not in (None, first_pid), 10, "a restart")
    finally:
        stop_life_cycle(proc)
    mutated = read_events(root, "mutated", agent=agent.name)[-1]
    assert mutated["genes"] == ["src/agent/alpha.py:double", "src/agent/alpha.py:last",
                                "src/agent/beta.py", "src/agent/beta.py:step"]
    main = (agent / "src" / "agent" / "main.py").read_text()
    assert '"alpha.double": alpha.double' in main and '"beta.step": beta.step' in main
    assert '"alpha.last"' not in main
    stops = read_events(root, "stopped", agent=agent.name)
    assert stops and all(s["reason"] in ("restart", "shutdown") for s in stops)
    assert stops[-2]["reason"] == "restart"
