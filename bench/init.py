"""Benchmark ``evolve init N`` against a bare ``shutil.copytree`` of the same template.

Run it from the checkout, with the venv that has evolve installed::

    python bench/init.py                          # sizes 100, 1000, 10000; one repeat
    python bench/init.py --sizes 100,1000 --repeat 3 --workers 4
    python bench/init.py --template path/to/template --keep

The template is ``--template``, else the checkout's ``agent_template/``; while
that one has no ``src/agent/*.py`` (or cannot be loaded yet), a small template
from ``evolve_ai.testing.write_template`` is used instead, and a note says so
on stderr. ``evolve`` is always given the same template with ``--template``.

For each N, in a fresh directory under ``tempfile.mkdtemp()`` (removed at the
end unless ``--keep``), each repeat runs, in this order and on the same
filesystem:

1. baseline: ``shutil.copytree(template, agents/<i>)`` N times in this process;
2. evolve: ``evolve --root DIR -q init N --seed 1 --template T [--workers W]``
   in a subprocess, wall-clock timed, then checked: exit code 0 and N agent
   directories under ``DIR/agents``, else this script exits 1.

With several repeats, the fastest time of each side is kept and the largest
peak RSS.

Reading the table:

* ``ratio`` is evolve seconds / baseline seconds: how much the whole command
  (interpreter start-up, genomes, pool, fsync barrier, registry transaction)
  costs on top of copying the files. 1.0 would be free; the target at
  N=1000 is at most 1.5.
* ``ms/agent`` is seconds / N in milliseconds. Start-up costs dominate at
  small N; from 1000 to 10000 the per-agent cost of evolve should stay flat
  (target: within 1.2x), otherwise something grows worse than linearly.
* ``rss orch`` is ``ru_maxrss`` reported by ``os.wait4`` for the evolve
  process. Linux folds the peaks of descendants it reaped into that number,
  so it is the largest of the orchestrator and any single pool worker.
  ``rss tree`` is the peak of the RSS sum of the evolve process and all its
  children, sampled every 20 ms with psutil (shared pages of forked workers
  are counted once per process, so it overstates real memory use).

The summary lines compare with the targets and say PASS, MISS or n/a (size
not measured). A MISS does not change the exit status; only a failure to run
does.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from evolve_ai.errors import EvolveError
from evolve_ai.services import template as template_service
from evolve_ai.testing import evolve_command, write_template

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cli import positive_int

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[1] / "agent_template"
SAMPLE_SECONDS = 0.020
MIB = 1024 * 1024

TARGET_RATIO_AT_1000 = 1.5
TARGET_SCALING_10000_OVER_1000 = 1.2
TARGET_RSS_MB_AT_10000 = 200.0


class BenchError(Exception):
    """The benchmark could not run or evolve did not do its job."""


@dataclass(frozen=True, slots=True)
class EvolveRun:
    seconds: float
    maxrss_mb: float
    tree_peak_mb: float


@dataclass(frozen=True, slots=True)
class Row:
    count: int
    baseline_seconds: float
    evolve_seconds: float
    maxrss_mb: float
    tree_peak_mb: float

    @property
    def ratio(self) -> float:
        return self.evolve_seconds / self.baseline_seconds

    @property
    def evolve_ms_per_agent(self) -> float:
        return 1000.0 * self.evolve_seconds / self.count

    @property
    def baseline_ms_per_agent(self) -> float:
        return 1000.0 * self.baseline_seconds / self.count


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time `evolve init N` against N bare copytree calls of the same template.")
    parser.add_argument("--sizes", type=parse_sizes, default=[100, 1000, 10000],
                        help="comma-separated agent counts (default: 100,1000,10000)")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="runs per size, baseline then evolve each time (default: 1)")
    parser.add_argument("--template", type=Path, default=None,
                        help="template directory (default: the checkout's agent_template/)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="passed to `evolve init --workers` (default: evolve's own)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directories and print where they are")
    return parser


def has_modules(template: Path) -> bool:
    return any((template / "src" / "agent").glob("*.py"))


def choose_template(explicit: Path | None, scratch: Path) -> Path:
    """The template to benchmark; the fallback is written under ``scratch``."""
    if explicit is not None:
        template = explicit.resolve()
        try:
            template_service.load(template)
        except EvolveError as exc:
            raise BenchError(f"--template {template}: {exc}") from exc
        return template
    reason = None
    if not has_modules(DEFAULT_TEMPLATE):
        reason = "has no src/agent/*.py"
    else:
        try:
            template_service.load(DEFAULT_TEMPLATE)
        except EvolveError as exc:
            reason = f"cannot be loaded ({exc})"
    if reason is None:
        return DEFAULT_TEMPLATE
    print(f"note: {DEFAULT_TEMPLATE} {reason}; using a small test template instead",
          file=sys.stderr)
    return write_template(scratch / "template")


def run_baseline(template: Path, destination: Path, count: int) -> float:
    agents = destination / "agents"
    ignore = shutil.ignore_patterns("__pycache__")
    started = time.perf_counter()
    for index in range(count):
        shutil.copytree(template, agents / str(index), ignore=ignore)
    return time.perf_counter() - started


class TreeSampler:
    """Samples the RSS sum of a process and its descendants until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(SAMPLE_SECONDS)

    def _sample(self) -> int:
        try:
            processes = [self._process, *self._process.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total


def run_evolve(root: Path, template: Path, count: int, workers: int | None,
               output: Path) -> EvolveRun:
    command = [*evolve_command(), "--root", str(root), "-q", "init", str(count),
               "--seed", "1", "--template", str(template)]
    if workers is not None:
        command += ["--workers", str(workers)]
    env = dict(os.environ)
    env.pop("EVOLVE_ROOT", None)
    with output.open("wb") as sink:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink,
                                 stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(child.pid)
        sampler.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            sampler.stop()
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = output.read_text(errors="replace").strip()[-2000:]
        raise BenchError(f"evolve init {count} exited with {child.returncode}: {tail}")
    agents = root / "agents"
    found = sum(1 for entry in agents.iterdir() if entry.is_dir()) if agents.is_dir() else 0
    if found != count:
        raise BenchError(f"evolve init {count}: {agents} holds {found} agent directories")
    # ru_maxrss is in KiB on Linux.
    return EvolveRun(seconds, usage.ru_maxrss * 1024 / MIB, sampler.peak / MIB)


def measure(count: int, template: Path, repeat: int, workers: int | None, keep: bool) -> Row:
    base = Path(tempfile.mkdtemp(prefix=f"evolve-bench-init-{count}-"))
    baselines: list[float] = []
    runs: list[EvolveRun] = []
    try:
        for attempt in range(repeat):
            baseline_dir = base / f"baseline-{attempt}"
            evolve_dir = base / f"evolve-{attempt}"
            baselines.append(run_baseline(template, baseline_dir, count))
            runs.append(run_evolve(evolve_dir, template, count, workers,
                                   base / f"evolve-{attempt}.out"))
            if not keep:
                shutil.rmtree(baseline_dir)
                shutil.rmtree(evolve_dir)
    finally:
        if keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return Row(count, min(baselines), min(run.seconds for run in runs),
               max(run.maxrss_mb for run in runs), max(run.tree_peak_mb for run in runs))


def context_line(template: Path) -> str:
    try:
        version = importlib.metadata.version("evolve-ai")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    return (f"cpus {os.cpu_count()}  python {platform.python_version()}  "
            f"evolve {version}  template {template}")


def format_table(rows: list[Row]) -> list[str]:
    header = (f"{'N':>7} {'baseline s':>11} {'evolve s':>9} {'ratio':>6} "
              f"{'evolve ms/agent':>16} {'baseline ms/agent':>18} "
              f"{'rss orch MB':>12} {'rss tree MB':>12}")
    lines = [header]
    for row in rows:
        lines.append(
            f"{row.count:>7} {row.baseline_seconds:>11.3f} {row.evolve_seconds:>9.3f} "
            f"{row.ratio:>6.2f} {row.evolve_ms_per_agent:>16.3f} "
            f"{row.baseline_ms_per_agent:>18.3f} {row.maxrss_mb:>12.1f} "
            f"{row.tree_peak_mb:>12.1f}")
    return lines


def verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return f"{'PASS' if value <= limit else 'MISS'} ({value:.2f})"


def format_summary(rows: list[Row]) -> list[str]:
    by_count = {row.count: row for row in rows}
    at_1000 = by_count.get(1000)
    at_10000 = by_count.get(10000)
    ratio = at_1000.ratio if at_1000 else None
    scaling = (at_10000.evolve_ms_per_agent / at_1000.evolve_ms_per_agent
               if at_1000 and at_10000 else None)
    rss = at_10000.maxrss_mb if at_10000 else None
    return [
        f"init 1000 <= {TARGET_RATIO_AT_1000}x the bare copy: "
        f"{verdict(ratio, TARGET_RATIO_AT_1000)}",
        f"per-agent cost at 10000 within {TARGET_SCALING_10000_OVER_1000}x of 1000: "
        f"{verdict(scaling, TARGET_SCALING_10000_OVER_1000)}",
        f"peak RSS <= {TARGET_RSS_MB_AT_10000:.0f} MB at 10000: "
        f"{verdict(rss, TARGET_RSS_MB_AT_10000)}",
    ]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="evolve-bench-template-"))
    try:
        template = choose_template(args.template, scratch)
        print(context_line(template), flush=True)
        rows: list[Row] = []
        for count in args.sizes:
            rows.append(measure(count, template, args.repeat, args.workers, args.keep))
        print("\n".join(format_table(rows)))
        print("\n".join(format_summary(rows)))
    except (BenchError, OSError) as exc:
        print(f"bench/init.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep and any(scratch.iterdir()):
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
