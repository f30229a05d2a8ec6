"""Benchmark what watching costs: metrics and webhooks against neither, at N agents.

    python bench/observers.py                    # 1000 agents, 40 s a case
    python bench/observers.py --agents 200 --seconds 20

One workspace (``evolve init N --seed 1``, ``population.size`` N, no selection, so the
population holds still), then one ``evolve -q life-cycle --interval 30`` per case, in
turn:

- ``off``: no metrics, no webhook (the baseline);
- ``metrics``: ``metrics.listen`` on loopback, scraped every second by this script;
- ``metrics+1``: that, and one webhook endpoint on loopback that accepts everything
  (every event subscribed: the worst case);
- ``metrics+3``: that, and two more endpoints, one of them dead (nothing listens).

Passes run 30 s apart; right after the second (every agent runs), the orchestrator's
CPU (user+system, in % of one core) is measured over a window of ``--seconds``
between two passes, where only the agents' I/O, the metrics' server and the webhook
senders work; of it, the senders' own threads (named ``webhook-N`` in the kernel, read
from ``/proc``: a figure the rest of the process's noise does not reach); the median
and slowest pass of the run, as ratios to ``off``; and the senders' CPU per message
delivered over the whole runs.
Targets: metrics and webhooks within noise of ``off`` between passes (+0.1 % of a
core), no pass slowed by a dead receiver.

``--micro`` measures the metrics' own work in this process instead, in CPU time: one
pass's update and one scrape's exposition (what the noise of a whole life cycle hides).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

from evolve_ai.testing import evolve_command, read_events, run_evolve, set_config

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cli import positive_float, positive_int
from bench._procs import processes_under, thread_cpu

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
INTERVAL = 30.0  # seconds between passes
SCRAPES = 500  # scrapes over HTTP in --micro, per round


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        Sink.received += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def run_case(root: Path, name: str, settings: dict[str, object], seconds: float,
             scrape: int | None) -> dict[str, float]:
    set_config(root, {"metrics.listen": None, "webhooks": None} | settings)
    (root / "logs" / "evolve.jsonl").unlink(missing_ok=True)
    # Passes 30 s apart: the window lies between two passes, where only watching works.
    proc = subprocess.Popen([*evolve_command(), "--root", str(root), "-q", "life-cycle",
                             "--interval", str(INTERVAL)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(read_events(root, "pass_done")) < 2:  # the second pass: all agents run
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{name}: no second pass")
            time.sleep(0.2)
        process = psutil.Process(proc.pid)
        passes_before = len(read_events(root, "pass_done"))
        senders_before = sender_cpu(proc.pid)
        before = process.cpu_times()
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if scrape is not None:
                with urllib.request.urlopen(f"http://127.0.0.1:{scrape}/metrics",
                                            timeout=5) as answer:
                    answer.read()
            time.sleep(1.0)
        wall = time.monotonic() - started
        after = process.cpu_times()
        senders_window = sender_cpu(proc.pid) - senders_before
        senders_total = sender_cpu(proc.pid)
        overlapped = len(read_events(root, "pass_done")) - passes_before
        passes = [float(e["seconds"]) for e in read_events(root, "pass_done")]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"idle_cpu": 100 * cpu / wall, "senders_window": 100 * senders_window / wall,
            "senders_total": senders_total, "median_pass": statistics.median(passes),
            "slowest_pass": max(passes), "overlapped": overlapped}


def sender_cpu(pid: int) -> float:
    """CPU seconds so far of ``pid``'s webhook sender threads (``webhook-N``)."""
    return thread_cpu(pid, "webhook-")


def micro(agents: int) -> None:
    """The metrics' own CPU, in this process: one pass's update (events of a busy pass,
    every agent's fitness) and one scrape's exposition, best of 5 x 1000 (CPU time)."""
    from prometheus_client import generate_latest

    from evolve_ai.core.records import Event
    from evolve_ai.services.metrics import Metrics

    metrics = Metrics()
    metrics.describe("0" * 32, "truncation", "sequences")
    metrics.set_sandbox({"sandbox": "namespaces", "processes": "pids cgroup",
                         "memory": "memory cgroup", "uids": "one per agent"})
    events = [Event("born", 0.0, "a"), Event("died", 0.0, "b"),
              Event("limit", 0.0, "c", (("what", "memory"),))] * (agents // 10)

    def update() -> None:
        metrics.count(events)
        metrics.pass_seconds.observe(0.5)
        for _ in range(agents // 20):
            metrics.hello_seconds.observe(0.05)
        metrics.tally_tasks({"sent": 32 * agents, "answered": 31 * agents, "late": 10})
        metrics.set_population({"active": agents}, {"running": agents}, 12, [0.5] * agents)

    def scrape() -> None:
        generate_latest(metrics.registry)

    for name, work in (("update, per pass", update), ("exposition, per scrape", scrape)):
        best = min(_cpu_per_call(work) for _ in range(5))
        print(f"| {name} ({agents} agents, {len(events)} events) | {best * 1e6:.0f} us | "
              f"{best * 100:.3f} % of a core at one a second |")
    # The whole scrape as the life cycle serves it: its HTTP server (a thread per
    # request) and the exposition; the client is another process, not counted.
    port = free_port()
    update()
    metrics.serve("127.0.0.1", port)
    client = (f"import urllib.request\nfor _ in range({SCRAPES}):\n"
              f"    urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read()")
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        subprocess.run([sys.executable, "-c", client], check=True)
        best = min(best, (time.process_time() - started) / SCRAPES)
    print(f"| a scrape over HTTP, server side (served from the cache between passes) "
          f"| {best * 1e6:.0f} us | "
          f"{best * 100:.3f} % of a core at one a second |")


def _cpu_per_call(work: Any, calls: int = 1000) -> float:
    started = time.process_time()
    for _ in range(calls):
        work()
    return (time.process_time() - started) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=positive_int, default=1000)
    parser.add_argument("--seconds", type=positive_float, default=20.0,
                        help="the window between two passes (under 30)")
    parser.add_argument("--micro", action="store_true",
                        help="only the metrics' own CPU, in this process (seconds)")
    args = parser.parse_args()
    if args.micro:
        print("| metrics work | CPU per call | as a share of a core |")
        print("|---|---|---|")
        micro(args.agents)
        return 0
    base = Path(tempfile.mkdtemp(prefix="evolve-bench-observers-"))
    root = base / "ws"
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    live = f"http://127.0.0.1:{sink.server_port}/"
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    try:
        made = run_evolve(root, "init", str(args.agents), "--seed", "1")
        if made.returncode != 0:
            raise SystemExit(made.stderr)
        set_config(root, {"population.size": args.agents, "selection.strategy": "none"})
        metrics = free_port()
        listen: dict[str, object] = {"metrics.listen": f"127.0.0.1:{metrics}"}
        one = [{"url": live, "secret": SECRET, "events": ["*"]}]
        three = [*one, {"url": live + "b", "secret": SECRET, "events": ["*"]},
                 {"url": dead, "secret": SECRET, "events": ["*"]}]
        cases: list[tuple[str, dict[str, object], int | None]] = [
            ("off", {}, None), ("metrics", listen, metrics),
                 ("metrics+1", {**listen, "webhooks": one}, metrics),
                 ("metrics+3", {**listen, "webhooks": three}, metrics)]
        results = {}
        for name, settings, scrape in cases:
            print(f"# {name}", file=sys.stderr)
            results[name] = run_case(root, name, settings, args.seconds, scrape)
        off = results["off"]
        print(f"| case ({args.agents} agents) | CPU between passes, % of a core "
              "(minus off) | of it, webhook senders | median pass (ratio) | slowest pass "
              "| passes in the window |")
        print("|---|---|---|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['idle_cpu']:.2f} ({r['idle_cpu'] - off['idle_cpu']:+.2f}) "
                  f"| {r['senders_window']:.3f} "
                  f"| {r['median_pass']:.3f} s ({r['median_pass'] / off['median_pass']:.2f}) "
                  f"| {r['slowest_pass']:.3f} s | {r['overlapped']:.0f} |")
        report = json.loads(run_evolve(root, "webhooks", "--json").stdout)
        delivered = sum(row["delivered"] for row in report)
        for row in report:
            print(f"# {row['url']}: delivered {row['delivered']}, backlog {row['backlog']}, "
                  f"dropped {row['dropped']}", file=sys.stderr)
        spent = results["metrics+1"]["senders_total"] + results["metrics+3"]["senders_total"]
        if delivered:
            print(f"\nwebhook senders, whole runs: {spent:.2f} s of CPU for {delivered} "
                  f"messages delivered: {1e6 * spent / delivered:.0f} us a message "
                  "(a failed try to the dead endpoint included)")
    finally:
        sink.shutdown()
        for leftover in processes_under(base):
            leftover.kill()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
