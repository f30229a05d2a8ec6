"""`evolve serve-api`: the store as read-only JSON, while a life cycle runs and after."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evolve_ai.testing import (
    FAST_SETTINGS,
    evolve_command,
    init_workspace,
    run_evolve,
    set_config,
    start_life_cycle,
    status_json,
    stop_life_cycle,
    wait_until,
)
from tests.helpers import free_port


def _get(port: int, path: str, token: str | None = None,
         method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _serve(root: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen([*evolve_command(), "--root", str(root), "serve-api",
                             "--listen", f"127.0.0.1:{port}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert f"127.0.0.1:{port}" in line, proc.stderr.read() if proc.stderr else line
    return proc, port


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    yield init_workspace(tmp_path / "ws", 5, seed=7, settings={
        **FAST_SETTINGS, "selection.every": 2})


def test_the_api_says_what_the_commands_say(workspace: Path) -> None:
    life = start_life_cycle(workspace)
    server, port = _serve(workspace)
    try:
        wait_until(lambda: status_json(workspace)["generation"] >= 1, 60, "a generation")
        code, status = _get(port, "/api/status")
        assert code == 200 and status["root"] == str(workspace)
        assert set(status) >= {"generation", "counts", "fitness", "history", "template"}
        code, history = _get(port, "/api/history")
        assert code == 200 and history[0]["generation"] == 0
        code, ranked = _get(port, "/api/agents?sort=fitness&limit=3")
        assert code == 200 and len(ranked) == 3
        fitness = [a["fitness"] for a in ranked if a["fitness"] is not None]
        assert fitness == sorted(fitness, reverse=True)
        agent = ranked[0]["id"]
        code, shown = _get(port, f"/api/agents/{agent[:8]}")
        assert code == 200 and shown["id"] == agent
        code, line = _get(port, f"/api/agents/{agent}/lineage")
        assert code == 200 and line["ancestry"][0]["id"] == agent
        code, versions = _get(port, "/api/templates")
        assert code == 200 and versions["versions"][0]["newest"]
    finally:
        stop_life_cycle(life)
    try:  # and after the life cycle stopped: the same, from the store
        code, status = _get(port, "/api/status")
        assert code == 200 and status == json.loads(
            run_evolve(workspace, "status", "--json").stdout)
        assert _get(port, "/api/agents?status=dead")[0] == 200
        assert _get(port, "/api/agents/ffffffff")[0] == 404
        assert _get(port, "/api/agents?limit=0")[0] == 400
        assert _get(port, "/api/agents?sort=luck")[0] == 400
        assert _get(port, "/api/nowhere")[0] == 404
        assert _get(port, "/api/status", method="POST")[0] == 405
    finally:
        server.terminate()
        assert server.wait(10) == 0


def test_a_token_is_required_when_set(workspace: Path) -> None:
    set_config(workspace, {"api.token": "s3cret"})
    server, port = _serve(workspace)
    try:
        assert _get(port, "/api/status")[0] == 401
        assert _get(port, "/api/status", token="wrong")[0] == 401
        assert _get(port, "/api/status", token="s3cret")[0] == 200
    finally:
        server.terminate()
        server.wait(10)


def test_off_loopback_without_a_token_is_refused(workspace: Path) -> None:
    """Checked before anything is bound: no port is opened beyond loopback."""
    result = run_evolve(workspace, "serve-api", "--listen", "0.0.0.0:0", timeout=30)
    assert result.returncode == 1
    assert "api.token" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_evolve(workspace, "serve-api", "--listen", "nowhere", timeout=30)
    assert result.returncode == 1 and "--listen must be host:port" in result.stderr


def _raw(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Status and headers of one GET, redirects not followed."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        answer.read()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()


def test_a_browser_gives_the_token_once_and_keeps_a_cookie(workspace: Path) -> None:
    set_config(workspace, {"api.token": "s3cret-token"})
    server, port = _serve(workspace)
    try:
        assert _raw(port, "/api/status", {})[0] == 401
        code, headers = _raw(port, "/api/status?token=wrong", {})
        assert code == 401
        code, headers = _raw(port, "/api/status?token=s3cret-token&x=1", {})
        assert code == 303 and headers["location"] == "/api/status?x=1"  # token gone
        name, _, rest = headers["set-cookie"].partition("=")
        value = rest.split(";")[0]
        assert name == f"evolve_token_{port}" and "s3cret-token" not in headers["set-cookie"]
        assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
        # Another application's malformed cookie beside ours hides nothing.
        cookie = f'x="\\"; {name}={value}'
        assert _raw(port, "/api/status", {"Cookie": cookie})[0] == 200
        forged = value[:-1] + ("1" if value.endswith("0") else "0")
        assert _raw(port, "/api/status", {"Cookie": f"{name}={forged}"})[0] == 401
    finally:
        server.terminate()
        server.wait(30)


def test_without_a_token_only_loopback_names_are_answered(workspace: Path) -> None:
    server, port = _serve(workspace)
    try:
        assert _raw(port, "/api/status", {"Host": f"localhost:{port}"})[0] == 200
        assert _raw(port, "/api/status", {"Host": f"127.0.0.1:{port}"})[0] == 200
        assert _raw(port, "/api/status", {"Host": "attacker.example"})[0] == 421  # rebinding
    finally:
        server.terminate()
        server.wait(30)
