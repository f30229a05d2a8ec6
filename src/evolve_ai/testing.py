"""Helpers to build small templates and workspaces, for our tests and for users testing theirs.

Everything here is real: files on disk, the real ``evolve`` command in a
subprocess. Example::

    template = write_template(tmp_path / "tpl", {"alpha": "def f(terms):\\n    return 1\\n"})
    result = run_evolve(tmp_path / "ws", "init", "5", "--template", str(template))
    assert result.returncode == 0
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: A core runtime that speaks just enough of the protocol: hello, answers with the
#: first registry function that returns a value, stops on "stop" or EOF.
MINIMAL_RUNTIME = textwrap.dedent('''\
    """Minimal runtime for tests."""
    import json
    import sys

    __evolve__ = "core"


    def main(registry):
        print(json.dumps({"type": "hello", "genome_hash": ""}), flush=True)
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("type") == "stop":
                return 0
            if message.get("type") == "task":
                value = None
                for function in registry.values():
                    value = function(message.get("data"))
                    if value is not None:
                        break
                reply = {"type": "answer", "id": message.get("id"), "value": value}
                print(json.dumps(reply), flush=True)
        return 0
''')

DEFAULT_MODULES: Mapping[str, str] = {
    "alpha": "def last(terms):\n    return terms[-1] if terms else None\n\n\n"
             "def double(terms):\n    return 2 * terms[-1] if terms else None\n",
    "beta": "def step(terms):\n    return terms[-1] + terms[-1] - terms[-2]"
            " if len(terms) > 1 else None\n",
}


def write_template(
    directory: Path,
    modules: Mapping[str, str] | None = None,
    *,
    runtime: str = MINIMAL_RUNTIME,
    project_name: str = "agent",
) -> Path:
    """Write a template: ``src/agent/runtime.py`` (core) plus one file per module source."""
    package = directory / "src" / "agent"
    package.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(
        f'[project]\n# the agent package\nname = "{project_name}"\nversion = "0.1.0"\n'
    )
    (package / "runtime.py").write_text(runtime)
    for name, source in (DEFAULT_MODULES if modules is None else modules).items():
        path = package / f"{name.replace('.', '/')}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return directory


def evolve_command() -> list[str]:
    """The installed ``evolve`` console script next to this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("evolve")
    return [str(script)] if script.exists() else [sys.executable, "-m", "evolve_ai"]


def run_evolve(
    root: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``evolve --root ROOT ARGS...`` and capture its output (no TTY: quiet, as in cron)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EVOLVE_ROOT", None)
    return subprocess.run(
        [*evolve_command(), "--root", str(root), *args],
        capture_output=True, text=True, env=full_env, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )


def status_json(root: Path) -> dict[str, Any]:
    """``evolve status --json`` as a dict; raises if the command fails."""
    result = run_evolve(root, "status", "--json")
    if result.returncode != 0:
        raise AssertionError(f"evolve status failed ({result.returncode}): {result.stderr}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes): to assert that nothing changed."""
    if not root.exists():
        return {}
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*")) if path.is_file()
    }
