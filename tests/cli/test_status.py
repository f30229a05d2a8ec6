"""``evolve status``: the quick path (no click) prints what the full command line prints."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve_ai.entry import quick_status
from evolve_ai.testing import (
    FAST_SETTINGS,
    init_workspace,
    run_evolve,
    start_life_cycle,
    status_json,
    wait_until,
)

_CLICK_ONLY = [sys.executable, "-c", "import sys; from evolve_ai.cli import main; "
               "sys.argv[0] = 'evolve'; main()"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["status"], (None, False)),
    (["status", "--json"], (None, True)),
    (["--root", "/w", "status"], ("/w", False)),
    (["--root=/w", "-q", "status", "--json"], ("/w", True)),
    (["-q", "--root", "/a", "--root", "/b", "status"], ("/b", False)),  # last one wins
])
def test_quick_forms(argv: list[str], expected: tuple[str | None, bool],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVOLVE_ROOT", raising=False)
    assert quick_status(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["show", "x"], ["status", "--json", "--json"], ["status", "-h"], ["-v", "status"],
    ["--log-format", "json", "status"], ["status", "extra"], ["--root"], ["--root", "status"],
    ["--version"], ["stat"], ["--root=", "status"],
])
def test_other_command_lines_go_to_click(argv: list[str]) -> None:
    assert quick_status(argv) is None


def test_evolve_root_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVOLVE_ROOT", str(tmp_path))
    assert quick_status(["status"]) == (str(tmp_path), False)
    monkeypatch.setenv("EVOLVE_ROOT", "")  # click ignores an empty variable
    assert quick_status(["status"]) == (None, False)
    file = tmp_path / "file"
    file.write_text("")
    monkeypatch.setenv("EVOLVE_ROOT", str(file))
    assert quick_status(["status"]) is None  # click says why it is not a directory


def _click(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "EVOLVE_ROOT"}
    return subprocess.run([*_CLICK_ONLY, "--root", str(root), *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_same_output_as_click(tmp_path: Path) -> None:
    init_workspace(tmp_path, 3, seed=4)
    for args in (["status"], ["status", "--json"], ["-q", "status", "--json"]):
        quick, full = run_evolve(tmp_path, *args), _click(tmp_path, *args)
        assert (quick.returncode, quick.stdout, quick.stderr) == (0, full.stdout, "")
        assert full.returncode == 0
    assert json.loads(run_evolve(tmp_path, "status", "--json").stdout)["counts"]["active"] == 3


def test_same_error_as_click(tmp_path: Path) -> None:
    quick, full = run_evolve(tmp_path, "status"), _click(tmp_path, "status")
    assert quick.returncode == full.returncode == 1
    assert quick.stderr == full.stderr
    assert quick.stderr.startswith("evolve: error: ") and quick.stderr.count("\n") == 1
    assert quick.stdout == ""


def test_usage_errors_still_exit_2(tmp_path: Path) -> None:
    result = run_evolve(tmp_path, "status", "--bogus")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_quick_path_does_not_import_click(tmp_path: Path) -> None:
    init_workspace(tmp_path, 2)
    probe = ("import sys; from evolve_ai.entry import run_status; "
             f"code = run_status({str(tmp_path)!r}, True); "
             "assert 'click' not in sys.modules, 'click imported'; "
             "assert 'dataclasses' not in sys.modules, 'dataclasses imported'; "
             "assert 'msgpack' not in sys.modules, 'msgpack imported'; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["active"] == 2


def test_status_says_whether_a_life_cycle_runs_and_forgets_the_dead(tmp_path: Path) -> None:
    """The lock is the truth: a kill -9 leaves records of running agents in the store,
    and status then shows none of them as running."""
    root = init_workspace(tmp_path / "ws", 4, seed=4, settings={
        **FAST_SETTINGS, "selection.every": 2})
    idle = status_json(root)["life_cycle"]
    assert idle == {"running": False, "pid": None, "since": None, "last_pass": None}
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["counts"]["running"] == 4, 60, "4 running")
        live = status_json(root)["life_cycle"]
        assert live["running"] and live["pid"] == proc.pid
        assert live["since"] <= live["last_pass"] <= time.time()
        text = run_evolve(root, "status").stdout
        assert f"running (pid {proc.pid}, since" in text
        wait_until(lambda: len(status_json(root)["history"]) >= 4, 60, "3 generations")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    after = status_json(root)
    assert not after["life_cycle"]["running"] and after["life_cycle"]["last_pass"]
    assert after["counts"]["running"] == 0
    listed = json.loads(run_evolve(root, "agents", "--json").stdout)
    assert listed and {row["process"] for row in listed} == {"stopped"}
    assert "life cycle  not running; last pass" in run_evolve(root, "status").stdout


def test_history_last_n_and_csv(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 4, seed=4, settings={
        **FAST_SETTINGS, "selection.every": 1})
    assert run_evolve(root, "life-cycle", "--generations", "5").returncode == 0
    history = status_json(root)["history"]  # JSON: the whole history
    assert len(history) == 6
    table = run_evolve(root, "status", "--last", "2").stdout
    rows = [line.split() for line in table.splitlines() if re.match(r"\s+\d+ ", line)]
    assert [int(r[0]) for r in rows] == [4, 5]
    assert "4 earlier generations" in table
    csv_text = run_evolve(root, "status", "--csv").stdout
    parsed = list(csv.DictReader(io.StringIO(csv_text)))
    assert [int(r["generation"]) for r in parsed] == [h["generation"] for h in history]
    assert float(parsed[-1]["mean"]) == pytest.approx(history[-1]["mean"])
    both = run_evolve(root, "status", "--csv", "--json")
    assert both.returncode == 2 and "cannot be used together" in both.stderr
