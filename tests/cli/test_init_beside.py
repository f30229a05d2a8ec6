"""`evolve init` beside a running life cycle, founders from a chosen genome, and the
population size init writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import msgpack

from evolve_ai.testing import (
    FAST_SETTINGS,
    evolve_command,
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

SOLVER = "def last(terms):\n    return terms[-1] if terms else None\n"
OTHER = "def first(terms):\n    return terms[0] if terms else None\n"


def _workspace(tmp_path: Path, count: int) -> Path:
    template = write_template(tmp_path / "tpl", {"solver": SOLVER, "other": OTHER})
    return init_workspace(tmp_path / "ws", count, template=template, seed=5, settings={
        **FAST_SETTINGS, "selection.strategy": "none"})


def _size(root: Path) -> int:
    for line in (root / "evolve.toml").read_text().splitlines():
        if line.startswith("size = "):
            return int(line.split("=")[1])
    raise AssertionError("no population.size in evolve.toml")


def test_init_adds_agents_to_a_running_life_cycle(tmp_path: Path) -> None:
    root = _workspace(tmp_path, 4)
    assert _size(root) == 4
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["counts"]["running"] == 4, 30, "4 running")
        result = run_evolve(root, "init", "3")
        assert result.returncode == 0, result.stderr
        assert f"(pid {proc.pid}) takes them at its next pass" in result.stdout
        assert "population.size 4 -> 7" in result.stdout
        wait_until(lambda: status_json(root)["counts"]["running"] == 7, 30, "7 running")
        wait_until(lambda: read_events(root, "config_reloaded"), 30, "evolve.toml re-read")
        assert proc.poll() is None
    finally:
        stop_life_cycle(proc)
    [added] = read_events(root, "agents_added")
    assert added["count"] == 3
    assert _size(root) == 7
    assert status_json(root)["counts"]["active"] == 7


def test_two_inits_beside_a_life_cycle_take_turns(tmp_path: Path) -> None:
    root = _workspace(tmp_path, 2)
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["counts"]["running"] == 2, 30, "2 running")
        inits = [subprocess.Popen([*evolve_command(), "--root", str(root), "init", "20",
                                   "--workers", "1"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outputs = [p.communicate(timeout=120) for p in inits]
        assert [p.returncode for p in inits] == [0, 0], outputs
        wait_until(lambda: status_json(root)["counts"]["active"] == 42, 30, "42 agents")
    finally:
        stop_life_cycle(proc)
    assert _size(root) == 42  # each raised it: neither lost the other's count
    assert len(list((root / "agents").iterdir())) == 42
    assert list((root / "workspace" / "staging").iterdir()) == []


def test_founders_from_a_chosen_genome(tmp_path: Path) -> None:
    root = _workspace(tmp_path, 2)
    source = sorted((root / "agents").iterdir())[0]
    write_genome(source, {"src/agent/other.py": ["first"]})
    genome = tmp_path / "chosen.bin"
    genome.write_bytes((source / "genome.bin").read_bytes())
    before = {p.name for p in (root / "agents").iterdir()}
    assert run_evolve(root, "init", "3", "--from-genome", str(genome)).returncode == 0
    made = [p for p in (root / "agents").iterdir() if p.name not in before]
    assert len(made) == 3
    for agent in made:
        plain = msgpack.unpackb((agent / "genome.bin").read_bytes())
        assert plain["files"] == [{"path": "src/agent/other.py", "active": True,
                                   "functions": {"first": True}}]
    # --from an agent: the genome the store holds for it (scanned by a life cycle).
    assert run_evolve(root, "life-cycle", "--once").returncode == 0
    result = run_evolve(root, "init", "2", "--from", source.name[:8])
    assert result.returncode == 0, result.stderr
    assert len(list((root / "agents").iterdir())) == 7


def test_a_bad_founder_genome_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    root = _workspace(tmp_path, 2)
    toml = (root / "evolve.toml").read_text()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(msgpack.packb({"schema": 1, "files": [
        {"path": "src/agent/nowhere.py", "active": True, "functions": {}}]}))
    cases = [(["--from-genome", str(bad)], 1, "not a genome of this template"),
             (["--from-genome", str(tmp_path / "missing.bin")], 1, "cannot be read"),
             (["--from", "ffffffff"], 1, "no agent"),
             (["--from-genome", str(bad), "--from", "ffff"], 2, "cannot be used together")]
    for args, code, message in cases:
        result = run_evolve(root, "init", "3", *args)
        assert result.returncode == code, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        if code == 1:  # a runtime error: one line
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert len(list((root / "agents").iterdir())) == 2
    assert (root / "evolve.toml").read_text() == toml
