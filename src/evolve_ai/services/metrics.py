"""Prometheus metrics of a running life cycle, exposed by ``prometheus_client``.

The loop updates the metrics once per pass (a few gauge sets and counter increments),
then says so (``published``). Scrapes are answered on a thread of their own by a small
HTTP server: the exposition (``prometheus_client``'s encoders, in the format the
scraper asks for) is made at the first scrape after a pass and served from a cache
until the next pass, since nothing changes in between; one server thread, no thread per
request. A scrape never waits for a pass, and a pass never waits for a scrape. Label
values are bounded sets (statuses, process states, limit kinds, sandbox layers): never
one per agent.
"""

from __future__ import annotations

import importlib.metadata
import socket
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder

from evolve_ai._linux import name_thread
from evolve_ai.core.records import PROCESS_STATES, STATUSES, Event

# Events counted, by the name of their counter (``evolve_<name>_total``).
COUNTED = {"born": "births", "died": "deaths", "crashed": "crashes",
           "restarted": "restarts", "quarantined": "quarantines", "disabled": "disables",
           "mutated": "mutations", "founded": "founders", "migrated": "migrations"}
LIMITS = ("processes", "memory", "cpu", "unmeasured_rewrites", "disk")
LAYERS = ("namespaces", "pid_namespace", "no_user_namespaces", "pids_cgroup",
          "memory_cgroup", "own_uids")
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HELLO_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The life cycle's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.agents = Gauge("evolve_agents", "Agents by status.", ["status"], registry=r)
        self.processes = Gauge("evolve_agent_processes",
                               "Agent processes by state (active agents).", ["state"],
                               registry=r)
        self.generation = Gauge("evolve_generation", "The last generation closed.",
                                registry=r)
        self.fitness = Gauge("evolve_fitness", "Fitness of the measured active agents.",
                             ["stat"], registry=r)
        self.events = {name: Counter(f"evolve_{name}", f"{name.capitalize()} so far.",
                                     registry=r) for name in COUNTED.values()}
        self.limits = Counter("evolve_limit_breaches", "Limit breaches, by limit.", ["what"],
                              registry=r)
        self.tasks = Counter("evolve_tasks", "Tasks, by outcome (sent, answered, late).",
                             ["outcome"], registry=r)
        self.pass_seconds = Histogram("evolve_pass_duration_seconds",
                                      "Wall time of a pass.", buckets=PASS_BUCKETS,
                                      registry=r)
        self.hello_seconds = Histogram("evolve_launch_hello_seconds",
                                       "From an agent's launch to its hello.",
                                       buckets=HELLO_BUCKETS, registry=r)
        self.node_agents = Gauge("evolve_node_agents",
                                 "Agents with a process on each cluster node.", ["node"],
                                 registry=r)
        self._nodes: set[str] = set()
        self.sandbox = Gauge("evolve_sandbox_layer",
                             "Sandbox layers in force (1) or not (0).", ["layer"],
                             registry=r)
        self.info = Info("evolve_life_cycle", "The running life cycle.", registry=r)
        self.webhook_backlog = Gauge("evolve_webhook_backlog",
                                     "Webhook messages waiting, by endpoint.", ["endpoint"],
                                     registry=r)
        self.webhook_dropped = Gauge("evolve_webhook_dropped",
                                     "Webhook messages dropped so far, by endpoint.",
                                     ["endpoint"], registry=r)
        for status in STATUSES:
            self.agents.labels(status)
        for state in PROCESS_STATES:
            self.processes.labels(state)
        for stat in ("mean", "max", "min"):
            self.fitness.labels(stat)
        for what in LIMITS:
            self.limits.labels(what)
        for outcome in ("sent", "answered", "late"):
            self.tasks.labels(outcome)
        self._tasks = {"sent": 0, "answered": 0, "late": 0}
        self._lock = threading.Lock()
        self._version = 0  # of the values: one per pass
        self._cache: dict[str, bytes] = {}  # content type -> exposition of this version

    def serve(self, host: str, port: int) -> None:
        """Answer scrapes of ``/metrics`` on ``host:port`` from a daemon thread (OSError
        if it cannot)."""
        metrics = self

        class Scrape(BaseHTTPRequestHandler):
            timeout = 5.0  # a client that stalls holds the next scrape back 5 s at most

            def do_GET(self) -> None:
                if urllib.parse.urlsplit(self.path).path not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body, kind = metrics.exposition(self.headers.get("Accept", ""))
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        class Server(HTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        server = Server((host, port), Scrape)

        def run() -> None:
            name_thread()
            server.serve_forever()

        threading.Thread(target=run, name="evolve-metrics", daemon=True).start()

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The metrics in the format ``accept`` asks for, made once per pass."""
        encoder, kind = choose_encoder(accept)
        with self._lock:
            version, cached = self._version, self._cache.get(kind)
        if cached is None:
            cached = encoder(self.registry)  # outside the lock: a pass never waits
            with self._lock:
                if self._version == version:
                    self._cache[kind] = cached
        return cached, kind

    def published(self) -> None:
        """The pass has set every value: the next scrape makes a new exposition."""
        with self._lock:
            self._version += 1
            self._cache.clear()

    def describe(self, template: str, strategy: str, environment: str) -> None:
        self.info.info({"version": importlib.metadata.version("evolve-ai"),
                        "template": template, "strategy": strategy,
                        "environment": environment})

    def count(self, events: Iterable[Event]) -> None:
        for event in events:
            name = COUNTED.get(event.kind)
            if name is not None:
                self.events[name].inc()
            elif event.kind == "limit":
                what = str(dict(event.data).get("what"))
                self.limits.labels(what if what in LIMITS else "other").inc()

    def tally_tasks(self, totals: Mapping[str, int]) -> None:
        """The evaluator's running totals; counters move by the difference."""
        for outcome, total in totals.items():
            grown = total - self._tasks.get(outcome, 0)
            if grown > 0:
                self.tasks.labels(outcome).inc(grown)
            self._tasks[outcome] = total

    def set_population(self, statuses: Mapping[str, int], states: Mapping[str, int],
                       generation: int, fitness: Iterable[float]) -> None:
        for status in STATUSES:
            self.agents.labels(status).set(statuses.get(status, 0))
        for state in PROCESS_STATES:
            self.processes.labels(state).set(states.get(state, 0))
        self.generation.set(generation)
        values = list(fitness)
        summary = ({"mean": sum(values) / len(values), "max": max(values), "min": min(values)}
                   if values else {"mean": float("nan"), "max": float("nan"),
                                   "min": float("nan")})
        for stat, value in summary.items():
            self.fitness.labels(stat).set(value)

    def set_nodes(self, placement: Mapping[str, int]) -> None:
        """Agents per node (bounded: the cluster's nodes); a node gone loses its series."""
        for node in self._nodes - placement.keys():
            self.node_agents.remove(node)
        for node, count in placement.items():
            self.node_agents.labels(node).set(count)
        self._nodes = set(placement)

    def set_sandbox(self, said: Mapping[str, Any]) -> None:
        """From the sandbox report (``sandbox``, ``processes``, ``memory``, ``uids``)."""
        status = str(said.get("sandbox", ""))
        layers = {
            "namespaces": status.startswith("namespaces"),
            "pid_namespace": status.startswith("namespaces")
            and "no pid namespace" not in status,
            "no_user_namespaces": status == "namespaces",
            "pids_cgroup": said.get("processes") == "pids cgroup",
            "memory_cgroup": said.get("memory") == "memory cgroup",
            "own_uids": said.get("uids") == "one per agent",
        }
        for layer in LAYERS:
            self.sandbox.labels(layer).set(1 if layers[layer] else 0)

    def set_webhooks(self, report: Mapping[str, Mapping[str, Any]]) -> None:
        """From ``Store.webhook_report``; an endpoint is named by its URL without its
        query or credentials (bounded: the endpoints of evolve.toml)."""
        for url, row in report.items():
            endpoint = endpoint_label(url)
            self.webhook_backlog.labels(endpoint).set(row.get("backlog") or 0)
            self.webhook_dropped.labels(endpoint).set(row.get("dropped") or 0)


def endpoint_label(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
