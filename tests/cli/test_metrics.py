"""Prometheus metrics of a running life cycle: scraped by a real Prometheus server on
loopback, checked against `evolve status`; the Grafana dashboard's queries against a
real /metrics output."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from evolve_ai.testing import (
    FAST_SETTINGS,
    init_workspace,
    read_events,
    run_evolve,
    start_life_cycle,
    status_json,
    stop_life_cycle,
    wait_until,
)
from tests.helpers import free_port

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "evolve.json"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A life cycle of 6 agents serving its metrics on a loopback port."""
    port = free_port()
    root = init_workspace(tmp_path / "ws", 6, seed=4, settings={
        **FAST_SETTINGS, "selection.every": 2, "metrics.listen": f"127.0.0.1:{port}"})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["generation"] >= 1, 60, "a generation")
        yield root, port
    finally:
        stop_life_cycle(proc)


def _counts(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    counts = {name: samples[("evolve_agents", (("status", name),))]
              for name in ("active", "disabled", "quarantined", "dead")}
    counts["running"] = samples[("evolve_agent_processes", (("state", "running"),))]
    return counts


def test_metrics_say_what_status_says(served: tuple[Path, int]) -> None:
    root, port = served
    for _ in range(50):  # a pass between two reads changes both: read until none did
        before, status, samples = scrape(port), status_json(root), scrape(port)
        if _counts(before) == _counts(samples):
            break
    else:
        raise AssertionError("the metrics never held still")
    assert _counts(samples) == {k: float(status["counts"][k]) for k in _counts(samples)}
    assert samples[("evolve_generation", ())] >= 1
    assert samples[("evolve_tasks_total", (("outcome", "sent"),))] > 0
    assert samples[("evolve_tasks_total", (("outcome", "answered"),))] > 0
    assert samples[("evolve_launch_hello_seconds_count", ())] >= 6
    assert samples[("evolve_pass_duration_seconds_count", ())] >= 2
    assert samples[("evolve_births_total", ())] > 0  # a generation closed, with selection
    info = next(labels for (name, labels) in samples if name == "evolve_life_cycle_info")
    assert dict(info)["template"] == status["template"]["newest"]
    layers = {dict(labels)["layer"] for (name, labels) in samples
              if name == "evolve_sandbox_layer"}
    assert {"namespaces", "pid_namespace", "pids_cgroup"} <= layers
    # Bounded labels: nothing per agent.
    ids = {p.name for p in (root / "agents").iterdir()}
    assert not any(value in ids for _, labels in samples for _, value in labels)


def test_every_metric_the_dashboard_queries_exists(served: tuple[Path, int]) -> None:
    _, port = served
    names = {name for name, _ in scrape(port)}
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {re.sub(r"_(total|bucket)$", "", found) for panel in dashboard["panels"]
               for target in panel["targets"]
               for found in re.findall(r"\bevolve_[a-z_]+", target["expr"])}
    assert len(queried) >= 10
    exposed = {re.sub(r"_(total|bucket|count|sum|created|info)$", "", name) for name in names}
    assert queried <= exposed, queried - exposed


def _query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as answer:
        data = json.loads(answer.read())
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def test_a_real_prometheus_scrapes_the_life_cycle(served: tuple[Path, int],
                                                  tmp_path: Path) -> None:
    root, port = served
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is needed (Debian: apt-get install prometheus; .ci/run does)"
    config = tmp_path / "prometheus.yml"
    config.write_text(textwrap.dedent(f"""\
        global:
          scrape_interval: 1s
        scrape_configs:
          - job_name: evolve
            static_configs:
              - targets: ["127.0.0.1:{port}"]
        """))
    web = free_port()
    server = subprocess.Popen(
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{web}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def scraped() -> bool:
            with contextlib.suppress(OSError):
                return bool(_query(web, 'evolve_agents{status="active"}'))
            return False

        wait_until(scraped, 60, "Prometheus to scrape evolve")
        time.sleep(1.5)  # one more scrape: the values of a finished pass
        active = _query(web, 'evolve_agents{status="active"}')
        assert float(active[0]["value"][1]) == status_json(root)["counts"]["active"]
        fitness = _query(web, 'evolve_fitness{stat="max"}')
        assert 0.0 <= float(fitness[0]["value"][1]) <= 1.0
        up = _query(web, 'up{job="evolve"}')
        assert float(up[0]["value"][1]) == 1.0
    finally:
        server.terminate()
        server.wait(30)


def test_a_port_in_use_costs_the_metrics_not_the_life_cycle(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        root = init_workspace(tmp_path / "ws", 2, seed=4, settings={
            **FAST_SETTINGS, "metrics.listen": f"127.0.0.1:{port}"})
        result = run_evolve(root, "life-cycle", "--once")
    assert result.returncode == 0, result.stderr
    [refused] = read_events(root, "metrics_unavailable")
    assert refused["level"] == "error" and str(port) in refused["listen"]


def test_a_bad_listen_address_is_refused(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 1, settings={"metrics.listen": "nowhere"})
    result = run_evolve(root, "life-cycle", "--once")
    assert result.returncode == 1
    assert "metrics.listen" in result.stderr and "host:port" in result.stderr
