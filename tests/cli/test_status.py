"""``evolve status``: the quick path (no click) prints what the full command line prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evolve_ai.entry import quick_status
from evolve_ai.testing import init_workspace, run_evolve

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
