"""The population as a whole: no silent extinction, generations judged once measured,
the size it is held to."""

from __future__ import annotations

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
    write_genome,
    write_template,
)

SOLVER = "def last(terms):\n    return terms[-1] if terms else None\n"
CRASHY = "raise RuntimeError('boom at import')\n\n\ndef f(terms):\n    return 0\n"


def _doomed(tmp_path: Path, extra: dict[str, object]) -> Path:
    """Four agents that all express a module that crashes at import: all disabled soon."""
    template = write_template(tmp_path / "tpl", {"solver": SOLVER, "crashy": CRASHY})
    root = init_workspace(tmp_path / "ws", 4, template=template, seed=1, settings={
        **FAST_SETTINGS, "selection.strategy": "none", "supervisor.max_restarts": 1,
        **extra})
    for agent in (root / "agents").iterdir():
        write_genome(agent, {"src/agent/crashy.py": ["f"], "src/agent/solver.py": ["last"]})
    return root


def test_an_extinct_population_is_reseeded(tmp_path: Path) -> None:
    root = _doomed(tmp_path, {"population.min": 2})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: read_events(root, "reseeded"), 60, "a reseeding")
        assert proc.poll() is None
    finally:
        stop_life_cycle(proc)
    [extinction] = read_events(root, "extinction")[:1]
    assert extinction["level"] == "error" and extinction["min"] == 2
    assert extinction["runnable"] < 2
    [reseeded] = read_events(root, "reseeded")[:1]
    newest = status_json(root)["template"]["newest"]
    assert reseeded["template"] == newest
    founded = read_events(root, "founded")
    assert len(founded) >= reseeded["count"] == 4 - extinction["runnable"]
    assert all(e["template"] == newest and e["parent"] is None for e in founded)


def test_an_extinct_population_stops_the_life_cycle_when_asked(tmp_path: Path) -> None:
    root = _doomed(tmp_path, {"population.min": 2, "population.on_extinction": "stop"})
    result = run_evolve(root, "life-cycle", timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("evolve: error: the population is extinct: ")
    assert "Traceback" not in result.stderr
    assert read_events(root, "extinction")  # recorded before it stopped
    assert read_events(root, "life_cycle_stopped")[-1]["reason"] == "extinction"


def test_a_bad_extinction_setting_is_refused(tmp_path: Path) -> None:
    root = _doomed(tmp_path, {"population.on_extinction": "pray"})
    result = run_evolve(root, "life-cycle", "--once")
    assert result.returncode == 1
    assert "population.on_extinction" in result.stderr and "reseed" in result.stderr


def test_no_interval_still_measures_every_generation(tmp_path: Path) -> None:
    """Passes back to back still hear the agents: no generation is judged unmeasured."""
    template = write_template(tmp_path / "tpl", {"solver": SOLVER})
    root = init_workspace(tmp_path / "ws", 6, template=template, seed=1, settings={
        **FAST_SETTINGS, "selection.strategy": "truncation", "selection.every": 2})
    result = run_evolve(root, "life-cycle", "--generations", "4", "--interval", "0",
                        timeout=120)
    assert result.returncode == 0, result.stderr
    history = status_json(root)["history"]
    assert [row["generation"] for row in history] == [0, 1, 2, 3, 4]
    assert all(row["mean"] is not None for row in history[1:]), history
    assert read_events(root, "generation_deadline") == []
