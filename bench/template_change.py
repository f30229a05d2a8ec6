"""Benchmark a template change while a large population runs.

    python bench/template_change.py                  # 1000 agents, 200 running at once
    python bench/template_change.py --agents 300 --running 100

In a fresh temporary directory (removed at the end unless ``--keep``): ``evolve init N
--seed 1`` with the default template, ``population.size`` N and no selection (nobody
dies, so "nothing lost" can be counted), ``lifecycle.max_running`` below N so that
most agents wait for their turn, ``evolve -q life-cycle --interval 1`` in the
background. After ``--before`` passes, one module is added to ``agent_template/`` and
one existing module gains a comment line: a new version. Then ``--after`` more passes.

Printed, from the life cycle's own ``pass_done`` and ``migrated`` events:

- pass time before the change (median: the baseline), in the pass that took the new
  version, and after it (median), each as a ratio to the baseline;
- agents migrated in the change's pass (those not running: at once), and the cost per
  agent (the ``migration_done`` event's seconds over its agents; ratio to a pass);
- agents on the new version at the end (running agents move at their next restart,
  here when their turn ends), agents active before and after, quarantined after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from evolve_ai.testing import evolve_command, read_events, run_evolve, set_config, status_json

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cli import positive_int
from bench._procs import processes_under

NOVELTY = "def novelty(terms):\n    return terms[-1] * 3 if terms else None\n"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=positive_int, default=1000)
    parser.add_argument("--running", type=positive_int, default=200,
                        help="lifecycle.max_running (default: 200)")
    parser.add_argument("--before", type=positive_int, default=6, help="passes before")
    parser.add_argument("--after", type=positive_int, default=10, help="passes after")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args()


def passes(root: Path) -> list[dict[str, Any]]:
    return read_events(root, "pass_done")


def wait_passes(root: Path, count: int, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(passes(root)) < count:
        if proc.poll() is not None:
            raise SystemExit(f"the life cycle ended: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {count} passes")
        time.sleep(0.2)


def main() -> int:
    args = parse()
    base = Path(tempfile.mkdtemp(prefix="evolve-bench-template-"))
    root = base / "ws"
    proc: subprocess.Popen[str] | None = None
    try:
        print(f"# {args.agents} agents, {args.running} running at once", file=sys.stderr)
        made = run_evolve(root, "init", str(args.agents), "--seed", "1")
        if made.returncode != 0:
            raise SystemExit(made.stderr)
        set_config(root, {"population.size": args.agents, "selection.strategy": "none",
                          "lifecycle.max_running": args.running})
        proc = subprocess.Popen([*evolve_command(), "--root", str(root), "-q", "life-cycle",
                                 "--interval", "1"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_passes(root, args.before, proc, 600)
        active_before = status_json(root)["counts"]["active"]
        package = root / "agent_template" / "src" / "agent"
        (package / "novelty.py").write_text(NOVELTY)
        existing = sorted(p for p in package.glob("*.py")
                          if p.name not in ("__init__.py", "main.py", "novelty.py"))[0]
        existing.write_text(existing.read_text() + "# changed by the benchmark\n")
        changed_at = len(passes(root))
        wait_passes(root, changed_at + 1 + args.after, proc, 900)
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        proc = None
        report(root, active_before, args)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        for leftover in processes_under(base):
            leftover.kill()
        if args.keep:
            print(f"kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def report(root: Path, active_before: int, args: argparse.Namespace) -> None:
    seconds: list[float] = []
    during = -1  # the pass that took the new version
    migrations: dict[int, tuple[int, float]] = {}  # pass -> agents moved, seconds spent
    for event in read_events(root):  # in the order they happened
        if event["event"] == "template_changed":
            during = len(seconds)
        elif event["event"] == "migration_done":  # logged as it happens, before the rest
            migrations[len(seconds)] = (int(event["agents"]), float(event["seconds"]))
        elif event["event"] == "pass_done":
            seconds.append(float(event["seconds"]))
    migrated, migration = migrations.get(during, (0, 0.0))
    before = statistics.median(seconds[1:during])  # the first pass starts every agent
    after = statistics.median(seconds[during + 1:])
    status = status_json(root)
    versions = json.loads(run_evolve(root, "template", "--json").stdout)["versions"]
    newest = next(v for v in versions if v["newest"])
    rows = [
        ("pass before (median, the baseline)", f"{before:.3f} s", "1.00"),
        ("pass taking the new version", f"{seconds[during]:.3f} s",
         f"{seconds[during] / before:.2f}"),
        ("pass after (median)", f"{after:.3f} s", f"{after / before:.2f}"),
        ("migrated in that pass (not running: at once)", str(migrated), ""),
        ("migration per agent", f"{migration / max(1, migrated) * 1000:.3f} ms",
         f"{migration / max(1, migrated) / before:.4f}"),
        (f"on the new version after {args.after} passes", f"{newest['agents']}", ""),
        ("active before / after", f"{active_before} / {status['counts']['active']}", ""),
        ("quarantined after", str(status["counts"]["quarantined"]), ""),
    ]
    print(f"| measure ({args.agents} agents, {args.running} running) | value | ratio |")
    print("|---|---|---|")
    for name, value, ratio in rows:
        print(f"| {name} | {value} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
