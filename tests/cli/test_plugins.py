"""Plug-ins are found where users put them (the workspace directory), and one that does
not import is refused by every command that reads the configuration."""

from __future__ import annotations

import json
from pathlib import Path

from evolve_ai.testing import FAST_SETTINGS, init_workspace, run_evolve, set_config, status_json


def test_a_plugin_in_the_workspace_directory_is_imported_without_pythonpath(
        tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 3, seed=5, settings=FAST_SETTINGS)
    heard = tmp_path / "heard.jsonl"
    (root / "my_watch.py").write_text(
        "import json\n"
        f"def record(event):\n    open({str(heard)!r}, 'a').write(json.dumps(event['event'])"
        " + '\\n')\n")
    set_config(root, {"hooks": ["my_watch:record"], "selection.every": 1})
    result = run_evolve(root, "life-cycle", "--generations", "1")
    assert result.returncode == 0, result.stderr
    kinds = {json.loads(line) for line in heard.read_text().splitlines()}
    assert {"life_cycle_started", "generation"} <= kinds


def test_a_plugin_that_does_not_import_is_refused_by_every_command(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 3, seed=5, settings=FAST_SETTINGS)
    set_config(root, {"environment": "nope:thing"})
    before = status_json(root)["counts"]
    for command in (["init", "2"], ["life-cycle", "--once"], ["webhooks"], ["serve-api"]):
        result = run_evolve(root, *command)
        assert result.returncode == 1, (command, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert "evolve.toml: environment 'nope:thing' cannot be loaded" in line, line
        assert "No module named 'nope'" in line and f"imported from {root}" in line
    assert status_json(root)["counts"] == before  # nothing was added or started
