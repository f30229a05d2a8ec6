"""Benchmark the life cycle: scan cost, time to hello, supervision, deaths, throughput.

Run it from the checkout, with the venv that has evolve (and ``supervisor``, the
``dev`` extra) installed::

    python bench/lifecycle.py                     # 1000 agents, every measure
    python bench/lifecycle.py --agents 100 --only a,b
    python bench/lifecycle.py --agents 200 --keep # keep the temporary directory

Everything happens in one fresh directory under ``tempfile.mkdtemp()`` (removed
at the end unless ``--keep``), on one workspace made by
``evolve init N --seed 1`` with the default template. Machines are noisy, so
every figure comes with a baseline measured in the same run, and the ratios are
what to compare between runs. Every process the script starts is ended in a
``finally``, and a last sweep kills any process whose working directory is
inside the temporary directory.

Measures (``--only`` picks some, e.g. ``--only a,c``):

(a) scan cost. ``evolve_ai.workers.scan.scan_chunk`` called in this process
    the way the scanner stage calls it: a *full* pass (no previous stats:
    every file rehashed, genome decoded, wiring checked, modules compiled into
    ``workspace/pycache``) then an *idle* pass (the stats the full pass
    returned: nothing changed, stat only). Once on one core, once through a
    ``ProcessPoolExecutor(2)`` in chunks of 100 (workers warmed first; wall
    time, pickling included). Best of 2 full and 3 idle passes. ``idle/full``
    is the baseline ratio; the target is an idle pass of at most 0.1 ms per
    agent. A full pass writes every agent's .pyc files again, so it depends on
    the filesystem and varies more between runs than the idle pass.

(b) time to hello: from nothing to every agent having printed its ``hello``
    line. (1) evolve's ``Launcher`` (fork server start included, then one
    ``spawn`` per agent with the spec ``launch_spec`` builds, then a
    selectors loop on the stdout pipes); (2) a bare ``subprocess.Popen`` of
    ``python -m agent.main`` per agent, same wait; (3) ``supervisord`` with
    one ``[program:]`` per agent, until every stdout log holds ``"hello"``.
    (2) and (3) get the environment (1) gives its agents (PYTHONDONTWRITEBYTECODE
    included) but not its pycache: PYTHONPYCACHEPREFIX would send the standard
    library's bytecode there too, and a bare interpreter would then recompile
    it at every start; so (2) and (3) compile the agent's own modules at start,
    as a plain ``python -m agent.main`` would. Ratios: launcher/popen,
    launcher/supervisord. Target: launcher at most 1.5 s for 1000 agents.
    supervisord keeps a pipe on each program's stdin, so its agents stay up
    after hello; the same supervisord then serves as (c)'s baseline. Its
    agents are then SIGKILLed one by one while supervisord is stopped (SIGSTOP),
    then supervisord itself: its own shutdown stops programs a few per second.

(c) supervision overhead: ``evolve -q life-cycle --interval 40`` (also set in
    ``evolve.toml``), other settings at their defaults but ``population.size``,
    set to N (with the default, 100, selection would cull a larger workspace to
    100 at the first generation). Once ``status --json`` says every agent
    runs, 30 s of psutil sampling: CPU (cpu_times delta / wall, in % of one
    core) and RSS of the orchestrator, of its fork server, and of its other
    helpers (pool workers, multiprocessing's fork server and resource
    tracker); ``hwm`` is the kernel's lifetime RSS peak (VmHWM). Baseline:
    supervisord idling with the same N agents, same measure. The interval (40 s)
    is longer than the window, so that the window lies between two passes, as
    the target says; after it, the script waits for the next ``pass_done``
    and counts every pass that overlapped the window (a pass is logged only
    when it ends, so one under way at the window's end would otherwise be
    missed, as happened with an interval of 30 s: ~0.4 s of a pass is ~1 % of
    a core over 30 s): a pass (scan, tasks, save) costs far more than the
    time between passes. The window opens just after the pass that
    saw every agent running, which also sent each one its tasks: the answers,
    feedback and mutations come in at its start; ``quiet %`` is the CPU from
    10 s into the window to the start of the next pass inside it (or the
    window's end): the floor between passes. CPU times tick in 10 ms, so over
    30 s the resolution is 0.03 % of a core. The durations of every pass of
    that run (``pass_done`` in the log; the first one launches every agent)
    are listed too. (The same window with metrics served and webhooks sent is
    ``bench/observers.py``: one life cycle per case, alternated.) Then
    ``evolve status --json`` is timed 20 times while the
    life cycle runs, against ``evolve --version`` (the same console script
    doing nothing: interpreter and import cost). Then SIGTERM: the life cycle
    must exit 0 and leave no agent. Targets: orchestrator at most 0.5 % of a
    core and 100 MB; status at most 50 ms at 1000 agents.

(d) death noticed: in (c)'s life cycle (or a fresh one), 20 random running
    agents are SIGKILLed, 0.25 s apart; for each, the ``crashed`` event in
    ``logs/evolve.jsonl``. *noticed* = the event's ``time`` (when the
    supervisor reaped the exit; from the database's events table when the log
    line lacks it) minus the kill time; *logged* = the line's ``timestamp``
    minus the kill time: events are logged when the pass saves, so that delay
    is the pass interval's doing, not the supervisor's. Baseline: the same
    kills on agents started by a bare ``Launcher``, timed until
    ``read_exits`` reports them (the floor the supervisor builds on). Target:
    noticed median at most 100 ms.

(e) evaluation throughput: a fresh ``life-cycle --interval 0.1``; once
    answers are being scored, the rise of ``sum(evaluations)`` in
    ``workspace/evolve.db`` (read-only) between two saves about 15 s apart,
    divided by the time between those saves. Baseline: the same agents'
    capacity, the ``Launcher``'s agents driven for 10 s by a bare loop that
    keeps 4 tasks in flight per agent (no feedback, so no mutation and no
    restart). ``evolve/bare`` is the share of that capacity the life cycle
    turns into scored answers. The passes (with their durations), restarts,
    crashes, births and deaths logged in the window say where it went. No
    target.

The first line says what ran where: CPUs, memory, the load average when the
script started (anything else running skews every figure, less so the
ratios), Python, evolve and supervisor versions. The last lines compare with
the targets: PASS, MISS, or n/a (not measured, or
a target defined at 1000 agents while ``--agents`` is another number). A MISS
does not change the exit status; only a failure to run does (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import random
import resource
import selectors
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from evolve_ai.environments import Environment, Settings, load_environment
from evolve_ai.operations.scheduler import launch_spec
from evolve_ai.services import config as config_service
from evolve_ai.services import template as template_service
from evolve_ai.services.config import Config
from evolve_ai.services.forkserver_launcher import ForkServerLauncher
from evolve_ai.services.launcher import Launched
from evolve_ai.services.workspace import Workspace
from evolve_ai.testing import evolve_command, set_config
from evolve_ai.workers.scan import ScanContext, ScanInput, ScanResult, scan_chunk

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cli import positive_int
from bench._procs import processes_under, sweep

MEASURES = ("a", "b", "c", "d", "e")
MIB = 1024 * 1024
CHUNK = 100
POOL_WORKERS = 2
FULL_REPEATS = 2
IDLE_REPEATS = 3
HELLO_TIMEOUT = 300.0
CYCLE_INTERVAL = 40.0
RUNNING_POLL = 0.5
RUNNING_TIMEOUT = 120.0
SAMPLE_SECONDS = 30.0
SAMPLE_TICK = 0.5
QUIET_SKIP = 10.0
QUIET_MIN = 5.0
MEMBERS_REFRESH = 5.0
STATUS_RUNS = 20
VERSION_RUNS = 5
KILLS = 20
KILL_SPACING = 0.25
THROUGHPUT_INTERVAL = 0.1
THROUGHPUT_SECONDS = 15.0
BARE_SECONDS = 10.0
IN_FLIGHT = 4
STOP_TIMEOUT = 60.0

TARGET_IDLE_MS = 0.1
TARGET_HELLO_S_AT_1000 = 1.5
TARGET_CPU_PERCENT = 0.5
TARGET_RSS_MB = 100.0
TARGET_STATUS_MS_AT_1000 = 50.0
TARGET_NOTICED_MS = 100.0


class BenchError(Exception):
    """The benchmark could not run, or evolve did not do its job."""


# --- small helpers ---------------------------------------------------------------------


def note(text: str) -> None:
    """Progress, on stderr, so that stdout holds only the report."""
    print(f"... {text}", file=sys.stderr, flush=True)


def parse_only(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(chosen - set(MEASURES))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(MEASURES)}, got {text!r}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark evolve's life cycle against bare baselines (see the docstring).")
    parser.add_argument("--agents", type=positive_int, default=1000,
                        help="agents in the workspace (default: 1000)")
    parser.add_argument("--only", type=parse_only, default=frozenset(MEASURES),
                        help="comma-separated measures among a,b,c,d,e (default: all)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory and print where it is")
    return parser


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.inf


def fmt(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def tail(path: Path, size: int = 1500) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-size:].strip()
    return ""


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("EVOLVE_ROOT", None)
    return env


def run_command(command: Sequence[str], timeout: float = 120.0
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, env=clean_env(),
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def evolve(root: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return run_command([*evolve_command(), "--root", str(root), *args], timeout)


def read_only(db: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
    connection.execute("PRAGMA query_only = 1")
    return connection


def cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def vm_hwm_mb(pid: int) -> float:
    """The kernel's peak resident set of ``pid`` (VmHWM), in MiB; nan if unknown."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MIB
    return math.nan


# --- every process we start, and the last sweep --------------------------------------


class Reaper:
    """Processes and launchers this script started; ``close`` ends them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.popens: list[subprocess.Popen[bytes]] = []
        self.launchers: list[ForkServerLauncher] = []

    def track(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.popens.append(process)
        return process

    def close(self) -> None:
        for launcher in self.launchers:
            with contextlib.suppress(Exception):
                launcher.close()
        self.launchers.clear()
        for process in self.popens:
            # Each was started with start_new_session=True: its pid is its group.
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10.0)
        self.popens.clear()
        left = sweep(self.root)
        if left:
            note(f"cleanup: killed {left} leftover process(es) under {self.root}")


def wait_gone(processes: Sequence[psutil.Process], timeout: float) -> int:
    """How many of ``processes`` are still alive (zombies count as gone) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if _alive(p)]
        if not alive or time.monotonic() >= deadline:
            return len(alive)
        time.sleep(0.05)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- the workspace ----------------------------------------------------------------------


@dataclass(slots=True)
class Bench:
    base: Path
    count: int
    only: frozenset[str]
    reaper: Reaper
    workspace: Workspace = field(init=False)
    config: Config = field(init=False)
    ids: list[str] = field(default_factory=list)
    init_seconds: float = 0.0
    pycache_ready: bool = False

    @property
    def root(self) -> Path:
        return self.base / "ws"

    @property
    def pycache(self) -> Path:
        return self.workspace.pycache_dir

    def agent_dir(self, agent_id: str) -> Path:
        return self.workspace.agent_dir(agent_id)


def make_workspace(bench: Bench) -> None:
    note(f"evolve init {bench.count} --seed 1")
    started = time.perf_counter()
    result = evolve(bench.root, "-q", "init", str(bench.count), "--seed", "1", timeout=1800.0)
    bench.init_seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchError(f"evolve init exited with {result.returncode}: "
                         f"{result.stderr.strip()[-1500:]}")
    bench.workspace = Workspace(bench.root)
    configure(bench)
    with contextlib.closing(read_only(bench.workspace.db_path)) as db:
        bench.ids = [row[0] for row in db.execute(
            "SELECT id FROM agents WHERE status = 'active' ORDER BY id")]
    if len(bench.ids) != bench.count:
        raise BenchError(f"evolve init {bench.count} made {len(bench.ids)} active agents")


def configure(bench: Bench) -> None:
    """evolve.toml, formatting kept: ``[lifecycle] interval = 30``, ``[population] size = N``
    (and ``max_running`` >= N): the rest stays at its defaults."""
    path = bench.workspace.config_path
    # Selection keeps population.size agents: with the default (100) a larger workspace
    # would be culled to 100 at the first generation.
    values: dict[str, object] = {"lifecycle.interval": CYCLE_INTERVAL,
                                 "population.size": bench.count}
    if config_service.load(path).lifecycle.max_running < bench.count:
        values["lifecycle.max_running"] = bench.count  # else agents take turns: never all run
    set_config(bench.workspace.root, values)
    bench.config = config_service.load(path)


def scan_inputs(bench: Bench) -> list[ScanInput]:
    """What the scanner stage hands the workers on its first pass (no stats yet)."""
    with contextlib.closing(read_only(bench.workspace.db_path)) as db:
        rows = db.execute("SELECT id, genome_hash, code_hash FROM agents "
                          "WHERE status = 'active' ORDER BY id").fetchall()
    return [ScanInput(agent_id, str(bench.agent_dir(agent_id)), genome_hash, code_hash, None)
            for agent_id, genome_hash, code_hash in rows]


def scan_context(bench: Bench) -> ScanContext:
    _, catalogue = template_service.load(bench.workspace.template_dir)
    return ScanContext(catalogue, str(bench.pycache))


def check_scan(results: list[ScanResult], count: int) -> None:
    bad = [r for r in results if r.outcome != "ok"]
    if len(results) != count or bad:
        first = f": {bad[0].agent_id} {bad[0].outcome} ({bad[0].reason})" if bad else ""
        raise BenchError(f"scan: {len(results)} results for {count} agents, "
                         f"{len(bad)} not ok{first}")


def prepare_pycache(bench: Bench) -> None:
    """One full scan, so that the .pyc files every launch mode uses exist."""
    if bench.pycache_ready:
        return
    note("full scan to fill the pycache")
    check_scan(scan_chunk(scan_context(bench), scan_inputs(bench)), bench.count)
    bench.pycache_ready = True


# --- (a) scan cost ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanRow:
    label: str
    full_seconds: float
    idle_seconds: float
    full_rehashed: int
    idle_rehashed: int


def as_idle(results: list[ScanResult], bench: Bench) -> list[ScanInput]:
    """The next pass's inputs, as the scanner stage builds them from the last results."""
    return [ScanInput(r.agent_id, str(bench.agent_dir(r.agent_id)), r.genome_hash,
                      r.code_hash, r.stats) for r in results]


def timed_passes(run: Callable[[list[ScanInput]], list[ScanResult]], bench: Bench,
                 label: str) -> ScanRow:
    inputs = scan_inputs(bench)
    full_times, idle_times = [], []
    results: list[ScanResult] = []
    for _ in range(FULL_REPEATS):
        started = time.perf_counter()
        results = run(inputs)
        full_times.append(time.perf_counter() - started)
        check_scan(results, bench.count)
    full_rehashed = sum(r.rehashed for r in results)
    idle_inputs = as_idle(results, bench)
    idle_rehashed = 0
    for _ in range(IDLE_REPEATS):
        started = time.perf_counter()
        idle = run(idle_inputs)
        idle_times.append(time.perf_counter() - started)
        check_scan(idle, bench.count)
        idle_rehashed = sum(r.rehashed for r in idle)
    return ScanRow(label, min(full_times), min(idle_times), full_rehashed, idle_rehashed)


def measure_scan(bench: Bench) -> list[ScanRow]:
    context = scan_context(bench)
    note("(a) scan passes on one core")
    rows = [timed_passes(lambda items: scan_chunk(context, items), bench, "one core")]
    bench.pycache_ready = True
    note(f"(a) scan passes on a pool of {POOL_WORKERS}")
    # spawn: nothing of this process leaks into the workers, and nothing outlives the pool.
    # Per-chunk costs (pickling both ways, the scan) are those of the life cycle's forkserver pool.
    pool = ProcessPoolExecutor(max_workers=POOL_WORKERS,
                               mp_context=multiprocessing.get_context("spawn"))
    try:
        warm = scan_inputs(bench)[:4]
        for future in [pool.submit(scan_chunk, context, warm) for _ in range(2 * POOL_WORKERS)]:
            future.result()

        def on_pool(items: list[ScanInput]) -> list[ScanResult]:
            chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
            futures: list[Future[list[ScanResult]]] = [
                pool.submit(scan_chunk, context, chunk) for chunk in chunks]
            return [r for f in futures for r in f.result()]

        rows.append(timed_passes(on_pool, bench, f"pool of {POOL_WORKERS}, chunks {CHUNK}"))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return rows


def format_scan(rows: list[ScanRow], count: int) -> list[str]:
    lines = [f"(a) scan cost, {count} agents (best of {FULL_REPEATS} full, "
             f"{IDLE_REPEATS} idle passes)",
             f"  {'':<24}{'full ms/agent':>14}{'idle ms/agent':>14}{'idle/full':>10}"
             f"{'rehashed full':>14}{'rehashed idle':>14}"]
    for row in rows:
        full = 1000.0 * row.full_seconds / count
        idle = 1000.0 * row.idle_seconds / count
        lines.append(f"  {row.label:<24}{full:>14.3f}{idle:>14.4f}{idle / full:>10.3f}"
                     f"{row.full_rehashed:>14}{row.idle_rehashed:>14}")
    if len(rows) == 2:
        full = ratio(rows[0].full_seconds, rows[1].full_seconds)
        idle = ratio(rows[0].idle_seconds, rows[1].idle_seconds)
        lines.append(f"  pool speed-up: full {full:.2f}x, idle {idle:.2f}x")
    return lines


# --- (b) time to hello, and the Launcher baselines of (d) and (e) -------------------------


def has_hello(data: bytes) -> bool:
    for line in data.split(b"\n")[:-1]:
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("type") == "hello":
                return True
    return False


def wait_for_hellos(fds: dict[int, str], logs: Path, timeout: float) -> None:
    """Read every stdout fd (non-blocking) until its agent's hello line has come."""
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytes] = {}
    try:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
            buffers[fd] = b""
        deadline = time.monotonic() + timeout
        while buffers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{len(buffers)} of {len(fds)} agents said no hello "
                                 f"within {timeout:.0f} s")
            for key, _ in selector.select(min(remaining, 1.0)):
                fd = key.fd
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    agent_id = fds[fd]
                    raise BenchError(f"agent {agent_id} closed its stdout before hello: "
                                     f"{tail(logs / f'{agent_id}.err')}")
                data = buffers[fd] + chunk
                if has_hello(data):
                    selector.unregister(fd)
                    del buffers[fd]
                else:
                    buffers[fd] = data
    finally:
        selector.close()


def agent_env(bench: Bench, agent_id: str) -> dict[str, str]:
    """The environment the launcher gives this agent (bytecode writing off, as there).

    Not the launcher's pycache: PYTHONPYCACHEPREFIX would redirect the standard
    library's bytecode too, and a bare interpreter would recompile it at every
    start (about 6x slower); so here the agent's own modules compile at start.
    """
    return dict(launch_spec(bench.workspace, bench.config, agent_id).env)


@dataclass(slots=True)
class LauncherRun:
    seconds: float = 0.0
    server_seconds: float = 0.0
    spawn_seconds: float = 0.0
    sandbox: str = ""
    bare_answers: int = 0
    bare_seconds: float = 0.0
    exit_delays_ms: list[float] = field(default_factory=list)


def run_launcher(bench: Bench) -> LauncherRun:
    """(b1); then, on the same agents, the bare baselines of (e) and (d) when asked."""
    prepare_pycache(bench)
    logs = bench.base / "launcher"
    logs.mkdir()
    run = LauncherRun()
    launcher = ForkServerLauncher()
    bench.reaper.launchers.append(launcher)
    launched: list[Launched] = []
    try:
        note(f"(b) {bench.count} agents through evolve's Launcher")
        started = time.perf_counter()
        launcher.start()
        run.server_seconds = time.perf_counter() - started
        for agent_id in bench.ids:
            fd = os.open(logs / f"{agent_id}.err",
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                launched.append(launcher.spawn(launch_spec(bench.workspace, bench.config,
                                                           agent_id), fd))
            finally:
                os.close(fd)
        run.spawn_seconds = time.perf_counter() - started - run.server_seconds
        wait_for_hellos({item.stdout: item.agent_id for item in launched}, logs, HELLO_TIMEOUT)
        run.seconds = time.perf_counter() - started
        run.sandbox = launcher.sandbox_status
        if "e" in bench.only:
            note(f"(e) baseline: a bare loop drives the launcher's agents for {BARE_SECONDS:.0f} s")
            environment = load_environment(bench.config.environment,
                                           Settings(bench.config.evaluation.energy_cost))
            run.bare_answers, run.bare_seconds = drive_tasks(launched, environment,
                                                             BARE_SECONDS)
        if "d" in bench.only:
            note(f"(d) baseline: {KILLS} SIGKILLs, until the launcher reports each exit")
            run.exit_delays_ms = launcher_exit_delays(launcher, launched)
    finally:
        processes = _processes([item.pid for item in launched])
        for item in launched:
            for fd in (item.stdin, item.stdout):
                with contextlib.suppress(OSError):
                    os.close(fd)
        launcher.close()
        bench.reaper.launchers.remove(launcher)
    left = wait_gone(processes, 10.0)
    if left:
        raise BenchError(f"{left} launcher agents outlived Launcher.close()")
    return run


def _processes(pids: Sequence[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def drive_tasks(agents: Sequence[Launched], environment: Environment,
                seconds: float) -> tuple[int, float]:
    """Answers received while keeping IN_FLIGHT tasks queued at every agent."""
    rng = random.Random(1)
    selector = selectors.DefaultSelector()
    stdin_of = {item.stdout: item.stdin for item in agents}
    buffers = dict.fromkeys(stdin_of, b"")

    def send(fd: int, count: int) -> None:
        payload = b"".join(
            json.dumps({"type": "task", "id": task.id, "data": task.data}).encode() + b"\n"
            for task in environment.make_tasks(rng, count))
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(fd, payload)

    answers = 0
    try:
        for fd, stdin in stdin_of.items():
            selector.register(fd, selectors.EVENT_READ)
            send(stdin, IN_FLIGHT)
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for key, _ in selector.select(min(0.1, seconds - elapsed)):
                fd = key.fd
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(fd)
                    continue
                *lines, buffers[fd] = (buffers[fd] + chunk).split(b"\n")
                done = sum(1 for line in lines if b'"answer"' in line)
                answers += done
                if done:
                    send(stdin_of[fd], done)
        return answers, time.perf_counter() - started
    finally:
        selector.close()


def launcher_exit_delays(launcher: ForkServerLauncher, agents: Sequence[Launched]) -> list[float]:
    """ms from SIGKILL to the launcher's exit report, for KILLS agents, one at a time."""
    victims = random.Random(2).sample(list(agents), min(KILLS, len(agents)))
    selector = selectors.DefaultSelector()
    selector.register(launcher.fileno(), selectors.EVENT_READ)
    delays = []
    try:
        for victim in victims:
            killed = time.perf_counter()
            os.kill(victim.pid, signal.SIGKILL)
            deadline = killed + 10.0
            while True:
                if time.perf_counter() > deadline:
                    raise BenchError(f"the launcher never reported the exit of {victim.pid}")
                selector.select(1.0)
                if any(e.pid == victim.pid for e in launcher.read_exits()):
                    delays.append(1000.0 * (time.perf_counter() - killed))
                    break
            time.sleep(KILL_SPACING)
    finally:
        selector.close()
    return delays


def agent_envs(bench: Bench) -> dict[str, dict[str, str]]:
    """Each agent's environment exactly as the life cycle would launch it."""
    return {agent_id: agent_env(bench, agent_id) for agent_id in bench.ids}


def run_popen(bench: Bench) -> float:
    """(b2): a bare Popen per agent, then the same hello wait; seconds."""
    prepare_pycache(bench)
    logs = bench.base / "popen"
    logs.mkdir()
    envs = agent_envs(bench)
    children: list[subprocess.Popen[bytes]] = []
    note(f"(b) {bench.count} agents through subprocess.Popen")
    try:
        started = time.perf_counter()
        for agent_id in bench.ids:
            with (logs / f"{agent_id}.err").open("ab") as err:
                child = subprocess.Popen(
                    [sys.executable, "-m", "agent.main"], cwd=bench.agent_dir(agent_id),
                    env=envs[agent_id], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=err, start_new_session=True)
            children.append(bench.reaper.track(child))
            assert child.stdout is not None
            os.set_blocking(child.stdout.fileno(), False)
        fds = {}
        for agent_id, child in zip(bench.ids, children, strict=True):
            assert child.stdout is not None
            fds[child.stdout.fileno()] = agent_id
        wait_for_hellos(fds, logs, HELLO_TIMEOUT)
        return time.perf_counter() - started
    finally:
        for child in children:  # EOF on stdin: the agent exits by itself
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        deadline = time.monotonic() + 15.0
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            bench.reaper.popens.remove(child)


# --- (b3) and (c)'s baseline: supervisord ------------------------------------------------


@dataclass(slots=True)
class Usage:
    cpu_seconds: float = 0.0
    rss_peak: int = 0
    processes: int = 0
    hwm_mb: float = math.nan
    # (wall time, CPU seconds used since the window opened) at every tick
    timeline: list[tuple[float, float]] = field(default_factory=list)

    def percent_between(self, begin: float, end: float) -> float:
        """% of a core from the first tick at or after ``begin`` to the last at or before
        ``end`` (wall times); nan when that leaves under QUIET_MIN seconds."""
        inside = [(at, cpu) for at, cpu in self.timeline if begin <= at <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < QUIET_MIN:
            return math.nan
        return 100.0 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


@dataclass(slots=True)
class Sample:
    start: float  # wall time the window opened
    wall: float
    usage: dict[str, Usage]


def sample(members: Callable[[], dict[str, list[psutil.Process]]], seconds: float,
           hwm_of: dict[str, int] | None = None) -> Sample:
    """CPU seconds and RSS peak per role over ``seconds``; roles are re-resolved now and then.

    A process born inside the window counts from zero; one that dies inside it
    keeps what was last seen of it. CPU times tick in 10 ms: 0.03 % of a core
    over 30 s.
    """
    start_time = time.time()
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    role_of: dict[int, str] = {}
    peaks: dict[str, int] = {}
    timelines: dict[str, list[tuple[float, float]]] = {}
    roles = members()
    refreshed = time.monotonic()

    def tick() -> None:
        for role, processes in roles.items():
            total = 0
            for process in processes:
                try:
                    with process.oneshot():
                        times = process.cpu_times()
                        rss = process.memory_info().rss
                        born = process.create_time()
                except psutil.Error:
                    continue
                cpu = times.user + times.system
                if process.pid not in first:
                    first[process.pid] = 0.0 if born > start_time else cpu
                    role_of[process.pid] = role
                last[process.pid] = cpu
                total += rss
            peaks[role] = max(peaks.get(role, 0), total)
        now = time.time()
        used: dict[str, float] = {}
        for pid, role in role_of.items():
            used[role] = used.get(role, 0.0) + last[pid] - first[pid]
        for role in roles:
            timelines.setdefault(role, []).append((now, used.get(role, 0.0)))

    started = time.monotonic()
    tick()
    while (now := time.monotonic()) - started < seconds:
        time.sleep(min(SAMPLE_TICK, seconds - (now - started)))
        if time.monotonic() - refreshed >= MEMBERS_REFRESH:
            roles, refreshed = members(), time.monotonic()
        tick()
    wall = time.monotonic() - started
    usage = {role: Usage() for role in roles}
    for pid, role in role_of.items():
        entry = usage.setdefault(role, Usage())
        entry.cpu_seconds += last[pid] - first[pid]
        entry.processes += 1
    for role, peak in peaks.items():
        usage.setdefault(role, Usage()).rss_peak = peak
    for role, timeline in timelines.items():
        usage.setdefault(role, Usage()).timeline = timeline
    for role, pid in (hwm_of or {}).items():
        usage.setdefault(role, Usage()).hwm_mb = vm_hwm_mb(pid)
    return Sample(start_time, wall, usage)


@dataclass(slots=True)
class SupervisordRun:
    seconds: float = math.nan
    sample: Sample | None = None
    left: int = 0
    missing: str = ""


def supervisord_conf(bench: Bench, directory: Path, envs: dict[str, dict[str, str]]) -> Path:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # Per program: stdin, stdout and stderr pipes plus two log files.
    wanted = 6 * bench.count + 256
    minfds = wanted if limit == resource.RLIM_INFINITY else min(wanted, limit)
    lines = ["[supervisord]", "nodaemon=true", f"logfile={directory / 'supervisord.log'}",
             f"pidfile={directory / 'supervisord.pid'}", f"childlogdir={directory}",
             f"minfds={minfds}", "minprocs=200", ""]
    for index, agent_id in enumerate(bench.ids):
        env = ",".join(f'{key}="{value}"' for key, value in envs[agent_id].items())
        lines += [f"[program:a{index}]", f"command={sys.executable} -m agent.main",
                  f"directory={bench.agent_dir(agent_id)}", f"environment={env}",
                  f"stdout_logfile={directory / f'a{index}.out'}",
                  f"stderr_logfile={directory / f'a{index}.err'}",
                  "autostart=true", "autorestart=false", "startsecs=0", "startretries=0",
                  "stopwaitsecs=10", ""]
    path = directory / "supervisord.conf"
    path.write_text("\n".join(lines).replace("%", "%%"), encoding="utf-8")
    return path


def run_supervisord(bench: Bench, sample_seconds: float | None) -> SupervisordRun:
    """(b3): supervisord up to every hello; then, for (c), ``sample_seconds`` of it idling."""
    run = SupervisordRun()
    program = Path(sys.executable).with_name("supervisord")
    if not program.exists():
        found = shutil.which("supervisord")
        if found is None:
            run.missing = "supervisord not installed (pip install supervisor)"
            return run
        program = Path(found)
    prepare_pycache(bench)
    directory = bench.base / "supervisord"
    directory.mkdir()
    envs = agent_envs(bench)
    conf = supervisord_conf(bench, directory, envs)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    note(f"(b) {bench.count} agents under supervisord")
    with (directory / "stdout.txt").open("ab") as sink:
        started = time.perf_counter()
        daemon = bench.reaper.track(subprocess.Popen(
            [str(program), "-n", "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT, env=env, cwd=directory, start_new_session=True))
    try:
        wait_for_logged_hellos(daemon, directory, bench.count)
        run.seconds = time.perf_counter() - started
        supervisor = psutil.Process(daemon.pid)
        if sample_seconds is not None:
            alive = sum(1 for p in supervisor.children(recursive=True) if _alive(p))
            if alive != bench.count:
                note(f"(c) baseline: only {alive} of {bench.count} agents alive "
                     "under supervisord")
            note(f"(c) baseline: sampling supervisord for {sample_seconds:.0f} s")
            run.sample = sample(lambda: {"supervisord": [supervisor]}, sample_seconds,
                                {"supervisord": daemon.pid})
    finally:
        run.left = stop_supervisord(daemon)
        if run.left:
            note(f"supervisord: {run.left} agent(s) survived SIGKILL")
        bench.reaper.popens.remove(daemon)
    return run


def wait_for_logged_hellos(daemon: subprocess.Popen[bytes], directory: Path,
                           count: int) -> None:
    """Until every program's stdout log holds its hello."""
    pending = {directory / f"a{index}.out" for index in range(count)}
    deadline = time.monotonic() + HELLO_TIMEOUT
    while pending:
        if daemon.poll() is not None:
            raise BenchError(f"supervisord exited with {daemon.returncode}: "
                             f"{tail(directory / 'supervisord.log')}")
        if time.monotonic() > deadline:
            raise BenchError(f"{len(pending)} agents said no hello under supervisord "
                             f"within {HELLO_TIMEOUT:.0f} s")
        for path in list(pending):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size and b'"hello"' in path.read_bytes():
                    pending.discard(path)
        if pending:
            time.sleep(0.02)


def stop_supervisord(daemon: subprocess.Popen[bytes]) -> int:
    """Freeze supervisord, kill its agents one by one, then kill it; how many agents lived on.

    Not its own shutdown: that stops programs a few per second, and one still
    starting its programs would go on starting them.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon.pid, signal.SIGSTOP)
    agents: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        agents = psutil.Process(daemon.pid).children(recursive=True)
    for process in agents:  # each program has its own process group
        with contextlib.suppress(psutil.Error):
            process.kill()
    left = wait_gone(agents, 10.0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait()
    return left


@dataclass(slots=True)
class HelloFigures:
    launcher: LauncherRun | None = None
    popen: float = math.nan
    supervisord: SupervisordRun | None = None


def format_hello(figures: HelloFigures, count: int) -> list[str]:
    lines = [f"(b) time to hello, {count} agents",
             f"  {'':<14}{'seconds':>9}{'ms/agent':>10}{'vs launcher':>13}  detail"]
    launcher = figures.launcher
    base = launcher.seconds if launcher else math.nan

    def row(label: str, seconds: float, detail: str) -> None:
        lines.append(f"  {label:<14}{fmt(seconds, 3):>9}{fmt(1000.0 * seconds / count, 3):>10}"
                     f"{fmt(seconds / base):>13}  {detail}")

    if launcher:
        row("launcher", launcher.seconds,
            f"fork server start {launcher.server_seconds:.3f} s, spawn loop "
            f"{launcher.spawn_seconds:.3f} s, sandbox: {launcher.sandbox}")
    row("popen", figures.popen, "python -m agent.main per agent, same env")
    sv = figures.supervisord
    if sv is not None and sv.missing:
        lines.append(f"  {'supervisord':<14}{'-':>9}  {sv.missing}")
    elif sv is not None:
        row("supervisord", sv.seconds, "one [program:] per agent, hello seen in its stdout log")
    lines.append(f"  launcher/popen {fmt(ratio(base, figures.popen), 3)}   "
                 f"launcher/supervisord "
                 f"{fmt(ratio(base, sv.seconds) if sv else math.nan, 3)}")
    return lines


# --- (c), (d), (e): evolve life-cycle ------------------------------------------------------


class LifeCycle:
    """``evolve life-cycle`` in a subprocess, and what we can see of it from outside."""

    def __init__(self, bench: Bench, interval: float, label: str) -> None:
        self.bench = bench
        self.output = bench.base / f"life-cycle-{label}.out"
        command = [*evolve_command(), "--root", str(bench.root), "-q", "life-cycle",
                   "--interval", str(interval)]
        with self.output.open("ab") as sink:
            self.process = bench.reaper.track(subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                env=clean_env(), cwd=bench.base, start_new_session=True))
        self.psutil = psutil.Process(self.process.pid)
        self.exit_code: int | None = None
        self.stop_seconds = math.nan
        self.left = 0

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"evolve life-cycle exited with {self.process.returncode}: "
                             f"{tail(self.output)}")

    def fork_server(self) -> psutil.Process | None:
        with contextlib.suppress(psutil.Error):
            for child in self.psutil.children():
                if "evolve_ai.forkserver" in cmdline(child):
                    return child
        return None

    def roles(self) -> dict[str, list[psutil.Process]]:
        server = self.fork_server()
        helpers: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            for child in self.psutil.children():
                if server is None or child.pid != server.pid:
                    helpers.append(child)
                    with contextlib.suppress(psutil.Error):
                        helpers.extend(child.children(recursive=True))
        return {"orchestrator": [self.psutil], "fork server": [server] if server else [],
                "helpers": helpers}

    def agents(self) -> dict[str, psutil.Process]:
        """Running agent processes by agent id (the fork server's children, by their cwd)."""
        server = self.fork_server()
        found: dict[str, psutil.Process] = {}
        if server is None:
            return found
        with contextlib.suppress(psutil.Error):
            for child in server.children():
                with contextlib.suppress(psutil.Error):
                    cwd = Path(child.cwd())
                    if cwd.parent == self.bench.workspace.agents_dir:
                        found[cwd.name] = child
        return found

    def wait_running(self, count: int) -> tuple[float, int]:
        """Poll ``status --json`` until counts.running == count; (seconds, last count)."""
        started = time.monotonic()
        running = 0
        while time.monotonic() - started < RUNNING_TIMEOUT:
            self.check_alive()
            polled = time.monotonic()
            result = evolve(self.bench.root, "status", "--json", timeout=60.0)
            if result.returncode == 0:
                running = int(json.loads(result.stdout)["counts"]["running"])
                if running >= count:
                    return time.monotonic() - started, running
            time.sleep(max(0.0, RUNNING_POLL - (time.monotonic() - polled)))
        return time.monotonic() - started, running

    def stop(self) -> None:
        """SIGTERM; record the exit code, the time it took and the agents it left."""
        if self.process.poll() is not None:
            self.exit_code = self.process.returncode
            return
        agents = list(self.agents().values())
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.exit_code = None
        self.stop_seconds = time.perf_counter() - started
        self.left = wait_gone(agents, 2.0) + sum(
            1 for p in processes_under(self.bench.workspace.agents_dir) if p not in agents)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        sweep(self.bench.workspace.agents_dir)
        self.bench.reaper.popens.remove(self.process)


def pass_spans(log: Path, offset: int) -> list[tuple[float, float]]:
    """(start, end) wall times of each pass whose ``pass_done`` came after byte ``offset``."""
    spans = []
    for record in read_log(log, offset):
        if record.get("event") == "pass_done":
            end = log_time(record, "timestamp")
            spans.append((end - float(record.get("seconds") or 0.0), end))
    return spans


def read_log(log: Path, offset: int) -> Iterator[dict[str, Any]]:
    with log.open("rb") as file:
        file.seek(offset)
        for line in file:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    yield record


def log_time(record: dict[str, Any], key: str) -> float:
    value = record.get(key)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value).timestamp()
    return math.nan


def log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass(slots=True)
class CycleFigures:
    count: int
    reached: int = 0
    reach_seconds: float = math.nan
    sample: Sample | None = None
    passes_in_window: int = 0
    quiet: tuple[float, float] = (math.nan, math.nan)  # wall times: no pass, answers settled
    pass_seconds: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    version_ms: list[float] = field(default_factory=list)
    exit_code: int | None = None
    stop_seconds: float = math.nan
    left: int = 0
    kills: list[tuple[str, float]] = field(default_factory=list)
    noticed_ms: list[float] = field(default_factory=list)
    logged_ms: list[float] = field(default_factory=list)
    noticed_source: str = ""
    unmatched: int = 0


def timed_runs(command: Sequence[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = run_command(command, 60.0)
        times.append(1000.0 * (time.perf_counter() - started))
        if result.returncode != 0:
            raise BenchError(f"{' '.join(command)} exited with {result.returncode}: "
                             f"{result.stderr.strip()[-800:]}")
    return times


def run_cycle(bench: Bench) -> CycleFigures:
    """(c) and/or (d) on one ``life-cycle --interval 40``."""
    figures = CycleFigures(bench.count)
    log = bench.workspace.events_log
    label = "(c)" if "c" in bench.only else "(d)"
    note(f"{label} evolve life-cycle --interval {CYCLE_INTERVAL:g}; waiting for "
         f"{bench.count} running agents (status --json every {RUNNING_POLL} s)")
    start = log_size(log)
    cycle = LifeCycle(bench, CYCLE_INTERVAL, "c")
    try:
        figures.reach_seconds, figures.reached = cycle.wait_running(bench.count)
        if figures.reached < bench.count:
            note(f"{label} only {figures.reached} of {bench.count} running after "
                 f"{RUNNING_TIMEOUT:.0f} s; measuring anyway")
        if "c" in bench.only:
            note(f"(c) sampling the orchestrator for {SAMPLE_SECONDS:.0f} s")
            offset = log_size(log)
            server = cycle.fork_server()
            hwm = {"orchestrator": cycle.process.pid}
            if server is not None:
                hwm["fork server"] = server.pid
            figures.sample = sample(cycle.roles, SAMPLE_SECONDS, hwm)
            cycle.check_alive()
            window_end = figures.sample.start + figures.sample.wall
            # A pass is logged when it ends: wait for the one after the window.
            deadline = time.monotonic() + CYCLE_INTERVAL + 60.0
            while (time.monotonic() < deadline
                   and not [end for _, end in pass_spans(log, offset) if end > window_end]):
                time.sleep(RUNNING_POLL)
            spans = pass_spans(log, offset)
            figures.passes_in_window = len([1 for begin, end in spans
                                            if begin < window_end and end > figures.sample.start])
            quiet_start = figures.sample.start + QUIET_SKIP
            quiet_end = min([begin for begin, _ in spans if begin > quiet_start],
                            default=figures.sample.start + figures.sample.wall)
            figures.quiet = (quiet_start, quiet_end)
            note(f"(c) {STATUS_RUNS} x evolve status --json, {VERSION_RUNS} x evolve --version")
            figures.status_ms = timed_runs(
                [*evolve_command(), "--root", str(bench.root), "status", "--json"], STATUS_RUNS)
            figures.version_ms = timed_runs([*evolve_command(), "--version"], VERSION_RUNS)
        if "d" in bench.only:
            kill_agents(bench, cycle, figures)
    finally:
        cycle.stop()
    figures.pass_seconds = [end - begin for begin, end in pass_spans(log, start)]
    figures.exit_code, figures.stop_seconds, figures.left = (
        cycle.exit_code, cycle.stop_seconds, cycle.left)
    return figures


def kill_agents(bench: Bench, cycle: LifeCycle, figures: CycleFigures) -> None:
    log = bench.workspace.events_log
    agents = cycle.agents()
    settled = [agent_id for agent_id, process in agents.items()
               if time.time() - process.create_time() > 1.0]
    victims = random.Random(3).sample(sorted(settled), min(KILLS, len(settled)))
    if not victims:
        raise BenchError("(d): no running agent to kill")
    note(f"(d) SIGKILL {len(victims)} agents, {KILL_SPACING} s apart; then waiting for "
         "the pass that logs their crashes")
    offset = log_size(log)
    for agent_id in victims:
        killed = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(agents[agent_id].pid, signal.SIGKILL)
        figures.kills.append((agent_id, killed))
        time.sleep(KILL_SPACING)
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + CYCLE_INTERVAL + 60.0
    kill_time = dict(figures.kills)
    while len(found) < len(victims) and time.monotonic() < deadline:
        cycle.check_alive()
        time.sleep(0.5)
        for record in read_log(log, offset):
            who = record.get("agent")
            if (record.get("event") == "crashed" and isinstance(who, str)
                    and who in kill_time and who not in found
                    and log_time(record, "timestamp") >= kill_time[who]):
                found[who] = record
    figures.unmatched = len(victims) - len(found)
    from_db = db_crash_times(bench, figures.kills)
    sources = set()
    for agent_id, record in found.items():
        killed = kill_time[agent_id]
        figures.logged_ms.append(1000.0 * (log_time(record, "timestamp") - killed))
        noticed = log_time(record, "time")
        if math.isnan(noticed) and agent_id in from_db:
            noticed, source = from_db[agent_id], "events table"
        else:
            source = "log line"
        if not math.isnan(noticed):
            figures.noticed_ms.append(1000.0 * (noticed - killed))
            sources.add(source)
    figures.noticed_source = " and ".join(sorted(sources))


def db_crash_times(bench: Bench, kills: list[tuple[str, float]]) -> dict[str, float]:
    """Event.time of each victim's first crash after its kill, from the events table."""
    times = {}
    with contextlib.closing(read_only(bench.workspace.db_path)) as db:
        for agent_id, killed in kills:
            row = db.execute("SELECT min(time) FROM events WHERE kind = 'crashed' "
                             "AND agent = ? AND time >= ?", (agent_id, killed)).fetchone()
            if row is not None and row[0] is not None:
                times[agent_id] = float(row[0])
    return times


def percent(usage: Usage, wall: float) -> float:
    return 100.0 * usage.cpu_seconds / wall


def format_cycle(figures: CycleFigures, supervisord: SupervisordRun | None) -> list[str]:
    lines = [f"(c) supervision, {figures.count} agents, life-cycle --interval "
             f"{CYCLE_INTERVAL:g}; {figures.reached} running after "
             f"{figures.reach_seconds:.1f} s"]
    if figures.sample is not None:
        wall = figures.sample.wall
        lines.append(f"  {'':<16}{'cpu % core':>11}{'quiet %':>9}{'rss peak MB':>12}"
                     f"{'hwm MB':>8}{'procs':>6}   ({wall:.1f} s window, "
                     f"{figures.passes_in_window} pass(es) in it)")
        rows = [(role, usage, figures.sample) for role, usage in figures.sample.usage.items()]
        if supervisord is not None and supervisord.sample is not None:
            rows += [(role, usage, supervisord.sample)
                     for role, usage in supervisord.sample.usage.items()]
        for role, usage, taken in rows:
            if taken is figures.sample:
                quiet = usage.percent_between(*figures.quiet)
            else:  # supervisord: nothing periodic, the same rule without passes
                quiet = usage.percent_between(taken.start + QUIET_SKIP, math.inf)
            lines.append(f"  {role:<16}{percent(usage, taken.wall):>11.3f}{fmt(quiet, 3):>9}"
                         f"{usage.rss_peak / MIB:>12.1f}{fmt(usage.hwm_mb, 1):>8}"
                         f"{usage.processes:>6}")
        orchestrator = figures.sample.usage.get("orchestrator")
        if orchestrator and supervisord and supervisord.sample:
            base = supervisord.sample.usage["supervisord"]
            cpu = ratio(percent(orchestrator, wall), percent(base, supervisord.sample.wall))
            lines.append(f"  orchestrator/supervisord: cpu {fmt(cpu)}, "
                         f"rss {fmt(ratio(orchestrator.rss_peak, base.rss_peak))}")
        elif supervisord is not None and supervisord.missing:
            lines.append(f"  supervisord baseline: n/a ({supervisord.missing})")
        status, version = median(figures.status_ms), median(figures.version_ms)
        lines.append(f"  status --json: median {status:.0f} ms, max {max(figures.status_ms):.0f}"
                     f" ms over {len(figures.status_ms)} runs; evolve --version: median "
                     f"{version:.0f} ms; status/version {ratio(status, version):.2f} "
                     f"(difference {status - version:+.0f} ms)")
    durations = ", ".join(f"{seconds:.2f}" for seconds in figures.pass_seconds)
    lines.append(f"  passes of this run, seconds each: {durations or '-'}")
    code = "timed out" if figures.exit_code is None else f"exit {figures.exit_code}"
    lines.append(f"  SIGTERM: {code} after {figures.stop_seconds:.2f} s, "
                 f"{figures.left} agent(s) left")
    return lines


def format_deaths(figures: CycleFigures, launcher: LauncherRun | None) -> list[str]:
    lines = [f"(d) death noticed, {len(figures.kills)} agents SIGKILLed "
             f"{KILL_SPACING} s apart (life-cycle --interval {CYCLE_INTERVAL:g})",
             f"  {'':<34}{'median ms':>10}{'max ms':>10}"]

    def row(label: str, values: list[float]) -> None:
        lines.append(f"  {label:<34}{fmt(median(values), 1):>10}"
                     f"{fmt(max(values) if values else math.nan, 1):>10}")

    row(f"noticed (event time, {figures.noticed_source or '-'})", figures.noticed_ms)
    row("logged (jsonl timestamp)", figures.logged_ms)
    if launcher is not None and launcher.exit_delays_ms:
        row("bare Launcher exit report (floor)", launcher.exit_delays_ms)
        lines.append(f"  noticed/floor (medians): "
                     f"{fmt(ratio(median(figures.noticed_ms), median(launcher.exit_delays_ms)))}")
    lines.append("  logged is when the pass saved: it waits for the next pass "
                 f"(interval {CYCLE_INTERVAL:g} s), so it measures the interval, not the noticing")
    if figures.unmatched:
        lines.append(f"  {figures.unmatched} kill(s) with no crashed event in the log")
    return lines


# --- (e) throughput --------------------------------------------------------------------------


@dataclass(slots=True)
class ThroughputFigures:
    tasks: int = 0
    seconds: float = math.nan
    passes: int = 0
    pass_seconds: list[float] = field(default_factory=list)
    restarts: int = 0
    crashes: int = 0
    births: int = 0
    deaths: int = 0
    running_mean: float = math.nan
    exit_code: int | None = None
    left: int = 0

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else math.nan


def evaluations(bench: Bench) -> tuple[int, float]:
    """sum(evaluations) over all agents, and the time of the save that wrote it."""
    with contextlib.closing(read_only(bench.workspace.db_path)) as db:
        total, updated = db.execute(
            "SELECT coalesce(sum(evaluations), 0), coalesce(max(updated), 0) FROM agents"
        ).fetchone()
    return int(total), float(updated)


def run_throughput(bench: Bench) -> ThroughputFigures:
    figures = ThroughputFigures()
    log = bench.workspace.events_log
    note(f"(e) evolve life-cycle --interval {THROUGHPUT_INTERVAL:g}; waiting for scored answers")
    cycle = LifeCycle(bench, THROUGHPUT_INTERVAL, "e")
    try:
        baseline, _ = evaluations(bench)
        deadline = time.monotonic() + RUNNING_TIMEOUT
        while True:
            cycle.check_alive()
            total, saved = evaluations(bench)
            if total > baseline:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"(e): no answer scored within {RUNNING_TIMEOUT:.0f} s")
            time.sleep(0.2)
        # Start on a fresh save, so that both ends are save times.
        while evaluations(bench)[1] == saved:
            cycle.check_alive()
            time.sleep(0.02)
        start_total, start_saved = evaluations(bench)
        offset = log_size(log)
        note(f"(e) measuring for {THROUGHPUT_SECONDS:.0f} s")
        running: list[int] = []
        while time.time() - start_saved < THROUGHPUT_SECONDS:
            cycle.check_alive()
            running.append(len(cycle.agents()))
            time.sleep(1.0)
        end_total, end_saved = evaluations(bench)
        while end_saved - start_saved < THROUGHPUT_SECONDS:
            cycle.check_alive()
            time.sleep(0.02)
            end_total, end_saved = evaluations(bench)
        figures.tasks = end_total - start_total
        figures.seconds = end_saved - start_saved
        figures.running_mean = statistics.fmean(running) if running else math.nan
        count_events(figures, log, offset, end_saved)
    finally:
        cycle.stop()
    figures.exit_code, figures.left = cycle.exit_code, cycle.left
    return figures


def count_events(figures: ThroughputFigures, log: Path, offset: int, until: float) -> None:
    """Passes, restarts, crashes, births and deaths logged from ``offset`` until ``until``."""
    for record in read_log(log, offset):
        if log_time(record, "timestamp") > until + 0.5:
            break
        event = record.get("event")
        if event == "pass_done":
            figures.passes += 1
            figures.pass_seconds.append(float(record.get("seconds") or 0.0))
        elif event == "stopped" and record.get("reason") == "restart":
            figures.restarts += 1
        elif event == "crashed":
            figures.crashes += 1
        elif event == "born":
            figures.births += 1
        elif event == "died":
            figures.deaths += 1


def format_throughput(figures: ThroughputFigures, launcher: LauncherRun | None,
                      count: int) -> list[str]:
    lines = [f"(e) evaluation throughput, {count} agents, life-cycle --interval "
             f"{THROUGHPUT_INTERVAL:g}, {figures.seconds:.1f} s between two saves"]
    lines.append(f"  evolve: {figures.tasks} answers scored, {figures.rate:.1f} tasks/s "
                 f"({figures.rate / count:.3f} per agent per s)")
    lines.append(f"  {figures.passes} passes (median {fmt(median(figures.pass_seconds))} s, "
                 f"max {fmt(max(figures.pass_seconds, default=math.nan))} s each), "
                 f"{figures.restarts} restarts, {figures.crashes} crashes, "
                 f"{figures.births} births, {figures.deaths} deaths; "
                 f"{figures.running_mean:.0f} agent processes alive on average")
    if launcher is not None and launcher.bare_seconds > 0:
        bare = launcher.bare_answers / launcher.bare_seconds
        lines.append(f"  bare loop on the launcher's agents ({IN_FLIGHT} tasks in flight each, "
                     f"{launcher.bare_seconds:.1f} s): {bare:.1f} tasks/s")
        lines.append(f"  evolve/bare: {ratio(figures.rate, bare):.3f}")
    code = "timed out" if figures.exit_code is None else f"exit {figures.exit_code}"
    lines.append(f"  SIGTERM: {code}, {figures.left} agent(s) left")
    return lines


# --- verdicts ----------------------------------------------------------------------------------


def verdict(value: float | None, limit: float, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{'PASS' if value <= limit else 'MISS'} ({value:.3g}{unit})"


def at_1000(value: float | None, count: int, limit: float, unit: str) -> str:
    if value is not None and count != 1000 and not math.isnan(value):
        return f"n/a (target set at 1000 agents; {value:.3g}{unit} at {count})"
    return verdict(value, limit, unit)


@dataclass(slots=True)
class Report:
    count: int
    scan: list[ScanRow] | None = None
    hello: HelloFigures | None = None
    cycle: CycleFigures | None = None
    throughput: ThroughputFigures | None = None


def format_verdicts(report: Report) -> list[str]:
    count = report.count
    lines = []
    for row in report.scan or []:
        lines.append(f"idle scan <= {TARGET_IDLE_MS} ms/agent ({row.label}): "
                     f"{verdict(1000.0 * row.idle_seconds / count, TARGET_IDLE_MS, ' ms')}")
    if not report.scan:
        lines.append(f"idle scan <= {TARGET_IDLE_MS} ms/agent: n/a")
    launcher = report.hello.launcher if report.hello else None
    hello = at_1000(launcher.seconds if launcher else None, count, TARGET_HELLO_S_AT_1000, " s")
    lines.append(f"launcher time to hello <= {TARGET_HELLO_S_AT_1000} s for 1000: {hello}")
    sampled = report.cycle.sample if report.cycle else None
    orchestrator = sampled.usage.get("orchestrator") if sampled else None
    cpu = percent(orchestrator, sampled.wall) if orchestrator and sampled else None
    rss = orchestrator.rss_peak / MIB if orchestrator else None
    lines.append(f"orchestrator cpu <= {TARGET_CPU_PERCENT} % of a core: "
                 f"{verdict(cpu, TARGET_CPU_PERCENT, ' %')}")
    lines.append(f"orchestrator rss <= {TARGET_RSS_MB:.0f} MB: "
                 f"{verdict(rss, TARGET_RSS_MB, ' MB')}")
    status = median(report.cycle.status_ms) if report.cycle and report.cycle.status_ms else None
    lines.append(f"status --json median <= {TARGET_STATUS_MS_AT_1000:.0f} ms at 1000: "
                 f"{at_1000(status, count, TARGET_STATUS_MS_AT_1000, ' ms')}")
    if report.cycle is not None:
        clean = report.cycle.exit_code == 0 and report.cycle.left == 0
        lines.append(f"life-cycle exits 0 on SIGTERM and leaves no agent: "
                     f"{'PASS' if clean else 'MISS'} (exit {report.cycle.exit_code}, "
                     f"{report.cycle.left} left)")
    noticed = (median(report.cycle.noticed_ms)
               if report.cycle and report.cycle.noticed_ms else None)
    lines.append(f"death noticed median <= {TARGET_NOTICED_MS:.0f} ms: "
                 f"{verdict(noticed, TARGET_NOTICED_MS, ' ms')}")
    lines.append("evaluation throughput: no target"
                 + (f" ({report.throughput.rate:.1f} tasks/s)" if report.throughput else " (n/a)"))
    return lines


# --- main ----------------------------------------------------------------------------------------


def context_line(count: int) -> str:
    try:
        version = importlib.metadata.version("evolve-ai")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    try:
        supervisor = importlib.metadata.version("supervisor")
    except importlib.metadata.PackageNotFoundError:
        supervisor = "not installed"
    memory = psutil.virtual_memory().total / MIB / 1024
    load = "/".join(f"{value:.1f}" for value in os.getloadavg())
    return (f"cpus {os.cpu_count()}  memory {memory:.1f} GiB  load {load}  python "
            f"{platform.python_version()}  evolve {version}  supervisor {supervisor}  "
            f"agents {count}")


def raise_fd_limit() -> None:
    """A thousand agents are two thousand pipe ends here: take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def emit(lines: list[str]) -> None:
    print("\n".join(lines), flush=True)
    print(flush=True)


def run(bench: Bench) -> Report:
    only = bench.only
    report = Report(bench.count)
    make_workspace(bench)
    print(f"workspace: {bench.count} agents, evolve init {bench.count} --seed 1 took "
          f"{bench.init_seconds:.2f} s\n", flush=True)
    if "a" in only:
        report.scan = measure_scan(bench)
        emit(format_scan(report.scan, bench.count))
    hello = HelloFigures()
    report.hello = hello
    if only & {"b", "d", "e"}:
        hello.launcher = run_launcher(bench)
    if "b" in only:
        hello.popen = run_popen(bench)
    if only & {"b", "c"}:
        hello.supervisord = run_supervisord(bench, SAMPLE_SECONDS if "c" in only else None)
    if "b" in only:
        emit(format_hello(hello, bench.count))
    if only & {"c", "d"}:
        report.cycle = run_cycle(bench)
        if "c" in only:
            emit(format_cycle(report.cycle, hello.supervisord))
        if "d" in only:
            emit(format_deaths(report.cycle, hello.launcher))
    if "e" in only:
        report.throughput = run_throughput(bench)
        emit(format_throughput(report.throughput, hello.launcher, bench.count))
    return report


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP end this script through its ``finally`` blocks, like Ctrl-C."""

    def handler(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_fd_limit()
    print(context_line(args.agents), flush=True)
    base = Path(tempfile.mkdtemp(prefix=f"evolve-bench-lifecycle-{args.agents}-"))
    reaper = Reaper(base)
    bench = Bench(base, args.agents, args.only, reaper)
    status = 0
    try:
        with terminate_as_exit():
            report = run(bench)
            print("\n".join(format_verdicts(report)), flush=True)
    except (BenchError, OSError, subprocess.SubprocessError, sqlite3.Error) as exc:
        print(f"bench/lifecycle.py: error: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt as exc:
        print(f"bench/lifecycle.py: interrupted {exc}", file=sys.stderr)
        status = 130
    finally:
        reaper.close()
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
