"""Helpers to build small templates and workspaces, for our tests and for users testing theirs.

Everything here is real: files on disk, the real ``evolve`` command in a subprocess,
a life cycle in the background. Example::

    template = write_template(tmp_path / "tpl", {"alpha": "def f(terms):\\n    return 1\\n"})
    root = init_workspace(tmp_path / "ws", 4, template=template, settings=FAST_SETTINGS)
    proc = start_life_cycle(root)
    wait_until(lambda: status_json(root)["counts"]["running"] == 4, 30, "4 running")
    stop_life_cycle(proc)  # in a ``finally:``, so that no life cycle outlives the test
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgpack
import psutil

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
    return subprocess.run(
        [*evolve_command(), "--root", str(root), *args],
        capture_output=True, text=True, env=_environment(env), timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment plus ``env``, without EVOLVE_ROOT (``--root`` says it)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EVOLVE_ROOT", None)
    return full_env


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


# --- workspaces and their evolve.toml ---------------------------------------------------

#: Settings for a life cycle that turns fast, for tests: a pass every 0.1 s, a crashed
#: agent restarted after 0.2 s (doubling up to 1 s) and disabled after 3 crashes in a row.
FAST_SETTINGS: Mapping[str, object] = MappingProxyType({
    "lifecycle.interval": 0.1,
    "supervisor.stop_timeout": 2.0,
    "supervisor.backoff_initial": 0.2,
    "supervisor.backoff_max": 1.0,
    "supervisor.max_restarts": 3,
    "supervisor.stable_after": 30.0,
})


def set_config(root: Path, values: Mapping[str, object]) -> None:
    """Set dotted keys in ``root/evolve.toml``, its formatting and comments kept.

    ``{"lifecycle.interval": 0.1, "hooks": ["mod:fn"]}`` sets a key of a table
    (made when missing) or a top-level key; ``None`` removes the key. The file is
    replaced atomically (see ``evolve_ai.services.config.set_values``).
    """
    from evolve_ai.services.config import set_values

    set_values(root / "evolve.toml", values)


def init_workspace(
    root: Path,
    count: int,
    *,
    template: Path | None = None,
    seed: int | None = None,
    settings: Mapping[str, object] | None = None,
) -> Path:
    """``evolve init COUNT`` in ``root`` (AssertionError if it fails), then ``settings``.

    ``settings`` go through ``set_config``; returns ``root``.
    """
    args = ["init", str(count)]
    if template is not None:
        args += ["--template", str(template)]
    if seed is not None:
        args += ["--seed", str(seed)]
    result = run_evolve(root, *args)
    if result.returncode != 0:
        raise AssertionError(f"evolve init failed ({result.returncode}): {result.stderr}")
    if settings:
        set_config(root, settings)
    return root


def write_genome(agent: Path, active: Mapping[str, Sequence[str]]) -> None:
    """Write ``agent/genome.bin`` as the agent itself would (the genome is the agent's).

    ``active`` maps a template file (``"src/agent/alpha.py"``) to the functions
    expressed in it; every file left out is off.
    """
    files = [{"path": path, "active": True, "functions": dict.fromkeys(names, True)}
             for path, names in active.items()]
    data = msgpack.packb({"schema": 1, "files": files, "mutations": 0, "state": {}},
                         use_bin_type=True)
    tmp = agent / ".genome.tmp"
    tmp.write_bytes(data)
    tmp.replace(agent / "genome.bin")


# --- a life cycle in the background ------------------------------------------------------


def start_life_cycle(
    root: Path, *args: str, env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start ``evolve --root ROOT life-cycle ARGS...``; its stdout and stderr are pipes.

    Stop it with ``stop_life_cycle`` (in a ``finally``).
    """
    return subprocess.Popen(
        [*evolve_command(), "--root", str(root), "life-cycle", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_environment(env),
    )


def stop_life_cycle(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """SIGTERM, then wait; AssertionError (with its stderr) unless it exits 0 in time.

    A life cycle still running after ``timeout`` seconds is killed.
    """
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the life cycle was still running {timeout} s after SIGTERM"
                             ) from None
    if code != 0:
        stderr = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"the life cycle exited with {code}: {stderr}")


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.1) -> None:
    """Call ``predicate`` every ``interval`` seconds until it is true; AssertionError after
    ``timeout`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def read_events(root: Path, event: str | None = None, *,
                agent: str | None = None) -> list[dict[str, Any]]:
    """The events of ``logs/evolve.jsonl`` in order, those named ``event`` of ``agent`` if given.

    A last line still being written is left out; no log yet means no event.
    """
    try:
        text = (root / "logs" / "evolve.jsonl").read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.splitlines()
    if not text.endswith("\n"):
        lines = lines[:-1]
    found: list[dict[str, Any]] = [json.loads(line) for line in lines]
    return [e for e in found
            if (event is None or e["event"] == event)
            and (agent is None or e.get("agent") == agent)]


def agent_processes(root: Path) -> list[psutil.Process]:
    """Processes whose working directory is inside the workspace's ``agents/``."""
    found = []
    agents = str(root / "agents")
    for process in psutil.process_iter(["pid"]):
        try:
            if process.cwd().startswith(agents):
                found.append(process)
        except psutil.Error:
            continue
    return found
