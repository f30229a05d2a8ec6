"""The population on one machine against a loopback Ray cluster of 1, 2 and 3 nodes.

    python bench/cluster.py                       # 1000 agents, a 30 s window per case
    python bench/cluster.py --agents 300 --seconds 15 --nodes 1,3

One workspace (``evolve init N --seed 1``, ``population.size`` N, no selection: the
population holds still), then one ``evolve -q life-cycle`` per case: ``local`` (the
fork server here) and ``ray xK`` (``cluster.backend = "ray"`` on a fresh
``ray.cluster_utils.Cluster`` of K nodes on 127.0.0.1, one CPU each). Per case:

- **hello**: seconds from the command's start to the first pass that finds all N
  agents running (Ray's own start-up, joining the cluster, one launch call per agent);
- **pass**: the median pass time once all run (the head's work for N agents);
- **tasks/s**: tasks answered per second over the window (the store's evaluations);
- **head CPU**: the ``life-cycle`` process, % of a core over the window; of it the
  ``ray-bridge`` thread (the exchanges, read from ``/proc``);
- **nodes CPU**: the node actors' processes (``ray::Node``), % of a core.

Ratios are against ``local`` in the same run. The scaling model printed at the end
(100,000 agents on 50 nodes) is computed from these figures; ``bench/README.md``
explains it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cli import positive_float, positive_int
from bench._procs import processes_under, thread_cpu

from evolve_ai.testing import evolve_command, read_events, run_evolve, set_config

LOOPBACK = "127.0.0.1"
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
HELLO_TIMEOUT = 600.0


@contextmanager
def loopback_cluster(nodes: int) -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    cluster: Any = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def node_actors() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(process.info["cmdline"] or []) or process.info["name"] or ""
        if title.startswith("ray::Node"):
            found.append(process)
    return found


def cpu_of(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def answered(root: Path) -> int:
    with sqlite3.connect(f"file:{root / 'workspace' / 'evolve.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT coalesce(sum(evaluations), 0) FROM agents").fetchone()[0])


def run_case(root: Path, agents: int, seconds: float, settings: dict[str, object]
             ) -> dict[str, float]:
    set_config(root, settings)
    (root / "logs" / "evolve.jsonl").unlink(missing_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen([*evolve_command(), "--root", str(root), "-q", "life-cycle"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        while not any(e.get("running", 0) >= agents for e in read_events(root, "pass_done")):
            if time.monotonic() - started > HELLO_TIMEOUT or proc.poll() is not None:
                said = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
                raise SystemExit(f"not all {agents} agents ran: {said}")
            time.sleep(0.2)
        hello = time.monotonic() - started
        time.sleep(3.0)  # the first tasks answered
        head = psutil.Process(proc.pid)
        actors = node_actors()
        passes_before = len(read_events(root, "pass_done"))
        cpu0, bridge0, nodes0 = head.cpu_times(), thread_cpu(proc.pid, "ray-bridge"), \
            cpu_of(actors)
        tasks0, window0 = answered(root), time.monotonic()
        time.sleep(seconds)
        cpu1, bridge1, nodes1 = head.cpu_times(), thread_cpu(proc.pid, "ray-bridge"), \
            cpu_of(actors)
        tasks1, wall = answered(root), time.monotonic() - window0
        passes = [float(e["seconds"]) for e in read_events(root, "pass_done")][passes_before:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(180)
    head_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"hello": hello, "pass": statistics.median(passes) if passes else float("nan"),
            "passes": len(passes), "tasks_s": (tasks1 - tasks0) / wall,
            "head": 100 * head_cpu / wall, "bridge": 100 * (bridge1 - bridge0) / wall,
            "nodes": 100 * (nodes1 - nodes0) / wall, "actors": len(actors)}


def model(agents: int, local: dict[str, float], widest: dict[str, float], nodes: int,
          interval: float) -> list[str]:
    """The head's pass time and bridge load at 100,000 agents on 50 nodes, linear in the
    figures measured here (the head's work is per agent; the bridge's per exchange)."""
    target_agents, target_nodes = 100_000, 50
    per_agent_pass = widest["pass"] / agents
    exchanges_s = nodes / interval
    bridge_per_exchange = widest["bridge"] / 100 / exchanges_s
    pass_at = per_agent_pass * target_agents
    bridge_at = bridge_per_exchange * target_nodes / interval
    head_per_agent = (widest["head"] - widest["bridge"]) / 100 / agents
    head_at = head_per_agent * target_agents
    # A pass is CPU of one core for pass_at seconds; the bridge takes bridge_at of a core
    # all the time: whichever is larger saturates the head first.
    bottleneck = ("the head's pass (scan, wiring checks, tasks and answers for every agent "
                  "in one process)" if pass_at >= bridge_at else "the bridge's exchanges")
    return [
        f"model for {target_agents} agents on {target_nodes} nodes (from ray x{nodes}, "
        f"{agents} agents):",
        f"  head pass: {per_agent_pass * 1e3:.3f} ms an agent -> {pass_at:.1f} s a pass "
        f"(local here: {local['pass'] / agents * 1e3:.3f} ms an agent)",
        f"  head CPU (passes and the agents' I/O), bridge apart: {head_per_agent * 100:.4f} "
        f"% of a core an agent -> {head_at * 100:.0f} % of a core",
        f"  bridge: {bridge_per_exchange * 1e3:.2f} ms of CPU an exchange, {target_nodes} "
        f"nodes every {interval * 1e3:.0f} ms -> {bridge_at * 100:.0f} % of a core",
        f"  bottleneck: {bottleneck}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=positive_int, default=1000)
    parser.add_argument("--seconds", type=positive_float, default=30.0,
                        help="the measuring window of each case (default: 30)")
    parser.add_argument("--nodes", default="1,2,3",
                        help="comma-separated cluster sizes (default: 1,2,3)")
    args = parser.parse_args()
    sizes = [int(part) for part in args.nodes.split(",") if part.strip()]
    os.environ.update(RAY_ENV)
    base = Path(tempfile.mkdtemp(prefix="evolve-bench-cluster-"))
    root = base / "ws"
    interval = 0.02
    try:
        made = run_evolve(root, "init", str(args.agents), "--seed", "1")
        if made.returncode != 0:
            raise SystemExit(made.stderr)
        set_config(root, {"population.size": args.agents, "selection.strategy": "none"})
        results: dict[str, dict[str, float]] = {}
        print("# local", file=sys.stderr)
        results["local"] = run_case(root, args.agents, args.seconds,
                                    {"cluster.backend": "local"})
        for size in sizes:
            print(f"# ray x{size}", file=sys.stderr)
            with loopback_cluster(size) as cluster:
                results[f"ray x{size}"] = run_case(root, args.agents, args.seconds, {
                    "cluster.backend": "ray", "cluster.address": cluster.address,
                    "cluster.node_address": LOOPBACK, "cluster.exchange_interval": interval})
        local = results["local"]
        print(f"| case ({args.agents} agents, {os.cpu_count()} cores) | hello s (ratio) "
              "| median pass s (ratio) | tasks/s (ratio) | head CPU % | of it, bridge % "
              "| node actors CPU % |")
        print("|---|---|---|---|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['hello']:.1f} ({r['hello'] / local['hello']:.2f}) "
                  f"| {r['pass']:.3f} ({r['pass'] / local['pass']:.2f}) "
                  f"| {r['tasks_s']:.0f} ({r['tasks_s'] / local['tasks_s']:.2f}) "
                  f"| {r['head']:.1f} | {r['bridge']:.1f} | {r['nodes']:.1f} "
                  f"({r['actors']:.0f} actors) |")
        widest = max(sizes)
        print("\n".join(model(args.agents, local, results[f"ray x{widest}"], widest,
                              interval)))
    finally:
        for leftover in processes_under(base):
            leftover.kill()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
