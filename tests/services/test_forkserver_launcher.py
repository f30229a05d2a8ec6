"""The launcher: a real fork server, real agents, real signals, rlimits and namespaces."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from evolve_ai import _cgroups
from evolve_ai.services.forkserver_launcher import ForkServerLauncher
from evolve_ai.services.launcher import Exited, Launched, LaunchError, LaunchSpec, Rlimits
from tests.helpers import root_powers
from tests.services import launcher_agents as agents

NO_LIMITS = Rlimits(None, None, None, None, None)
TIMEOUT = 10.0


def write_agent(directory: Path, source: str) -> Path:
    package = directory / "src" / "agent"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(source)
    return directory


def spec_for(directory: Path, *, limits: Rlimits = NO_LIMITS,
             env: dict[str, str] | None = None) -> LaunchSpec:
    return LaunchSpec(agent_id=directory.name, cwd=str(directory),
                      env=env if env is not None else {"EVOLVE_AGENT_ID": directory.name},
                      limits=limits, writable=(str(directory),),
                      readonly_within=(str(directory / "src"),), pycache_prefix=None)


@dataclass
class Agent:
    """A launched agent seen from the orchestrator: its pipes and its log."""

    launched: Launched
    log: Path
    buffer: bytes = b""

    @property
    def pid(self) -> int:
        return self.launched.pid

    def line(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line from agent {self.pid}; log: {self.stderr()}"
            select.select([self.launched.stdout], [], [], remaining)
            try:
                chunk = os.read(self.launched.stdout, 65536)
            except BlockingIOError:
                continue
            assert chunk, f"agent {self.pid} closed its stdout; log: {self.stderr()}"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def send(self, text: str) -> None:
        os.write(self.launched.stdin, text.encode())

    def close_stdin(self) -> None:
        os.close(self.launched.stdin)

    def stderr(self) -> str:
        return self.log.read_text()


@dataclass
class Harness:
    """One fork server for the module, and what each test launched with it."""

    launcher: ForkServerLauncher
    exits: dict[int, Exited] = field(default_factory=dict)
    open_fds: set[int] = field(default_factory=set)

    def launch(self, directory: Path, *, limits: Rlimits = NO_LIMITS,
               env: dict[str, str] | None = None, uid: int | None = None) -> Agent:
        log = directory / "agent.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
        try:
            spec = dataclasses.replace(spec_for(directory, limits=limits, env=env), uid=uid)
            launched = self.launcher.spawn(spec, fd)
        finally:
            os.close(fd)
        self.open_fds.update((launched.stdin, launched.stdout))
        return Agent(launched, log)

    def wait_exit(self, pid: int, timeout: float = TIMEOUT) -> Exited:
        deadline = time.monotonic() + timeout
        while pid not in self.exits:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no exit reported for {pid}"
            select.select([self.launcher.fileno()], [], [], remaining)
            for exited in self.launcher.read_exits():
                self.exits[exited.pid] = exited
        return self.exits.pop(pid)

    def close_fds(self) -> None:
        for fd in self.open_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.open_fds.clear()


@pytest.fixture(scope="module")
def launcher() -> Iterator[ForkServerLauncher]:
    with ForkServerLauncher() as started:
        yield started


@pytest.fixture
def harness(launcher: ForkServerLauncher) -> Iterator[Harness]:
    harness = Harness(launcher)
    yield harness
    harness.close_fds()


def gone(pid: int) -> bool:
    """Dead, or a zombie (dead, its parent has not reaped it yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 2.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [pid for pid in alive if not gone(pid)]
    return alive


# --- Running like `python -m agent.main` -------------------------------------------------


def test_agent_runs_as_python_m_would_run_it(harness: Harness, tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "echo", agents.HELLO_ECHO)
    env = {"EVOLVE_AGENT_ID": "echo", "EVOLVE_COMMONS": "/nowhere", "PATH": os.defpath}
    agent = harness.launch(directory, env=env)

    hello = json.loads(agent.line())
    assert hello["cwd"] == str(directory)
    assert hello["argv0"] == str(directory / "src" / "agent" / "main.py")
    assert hello["name"] == "__main__"
    assert hello["env"] == env
    assert hello["path"][0] == str(directory / "src")
    assert "" not in hello["path"]
    assert str(directory) not in hello["path"]
    assert os.getcwd() not in hello["path"]

    agent.send("ping\n")
    assert agent.line() == "ping"
    closed = time.monotonic()
    agent.close_stdin()
    exited = harness.wait_exit(agent.pid)
    noticed = time.monotonic() - closed
    assert exited == Exited("echo", agent.pid, 0)
    assert noticed < 1.0, f"exit noticed after {noticed:.3f} s"
    assert agent.stderr() == ""


def test_launched_pipes_belong_to_the_caller(harness: Harness, tmp_path: Path) -> None:
    agent = harness.launch(write_agent(tmp_path / "echo", agents.HELLO_ECHO))
    assert json.loads(agent.line())["type"] == "hello"  # its setup is over
    for fd in (agent.launched.stdin, agent.launched.stdout):
        assert not os.get_blocking(fd)
        assert not os.get_inheritable(fd)
    assert agent.launched.create_time == psutil.Process(agent.pid).create_time()
    assert os.getpgid(agent.pid) == agent.pid  # its own process group
    agent.close_stdin()
    assert harness.wait_exit(agent.pid).returncode == 0


# --- Exit statuses -----------------------------------------------------------------------


def test_system_exit_code_is_the_exit_status(harness: Harness, tmp_path: Path) -> None:
    agent = harness.launch(write_agent(tmp_path / "three", agents.EXIT_3))
    assert harness.wait_exit(agent.pid).returncode == 3
    assert [agent.line(), agent.line()] == ["bye", "atexit ran"]


@pytest.mark.parametrize(("env", "write_through", "encoding"), [
    ({}, False, "utf-8"),
    ({"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "latin-1"}, True, "latin-1"),
])
def test_stdio_is_set_up_as_python_would(harness: Harness, tmp_path: Path,
                                         env: dict[str, str], write_through: bool,
                                         encoding: str) -> None:
    directory = write_agent(tmp_path / "stdio", agents.STDIO)
    reports = []
    for _ in range(2):
        agent = harness.launch(directory, env=env)
        reports.append(json.loads(agent.line()))
        assert harness.wait_exit(agent.pid).returncode == 0
    assert reports[0]["write_through"] is write_through
    assert reports[0]["encoding"] == encoding
    assert reports[0]["random"] != reports[1]["random"]  # reseeded in every child


def test_uncaught_exception_exits_1_with_its_traceback(harness: Harness,
                                                         tmp_path: Path) -> None:
    agent = harness.launch(write_agent(tmp_path / "crash", agents.CRASH))
    assert harness.wait_exit(agent.pid).returncode == 1
    log = agent.stderr()
    assert "Traceback (most recent call last)" in log
    assert "ValueError: boom" in log


def test_killed_agent_reports_minus_the_signal(harness: Harness, tmp_path: Path) -> None:
    agent = harness.launch(write_agent(tmp_path / "sleeper", agents.SLEEPER))
    assert agent.line() == "ready"
    os.kill(agent.pid, signal.SIGKILL)
    assert harness.wait_exit(agent.pid).returncode == -signal.SIGKILL


def only_child(agent_pid: int) -> int:
    """The host's pid of the one child of the agent (whose own pid for it, in a pid
    namespace of its own, would mean nothing here)."""
    for _ in range(100):
        children = psutil.Process(agent_pid).children()
        if children:
            assert len(children) == 1, children
            return children[0].pid
        time.sleep(0.02)
    raise AssertionError("the agent has no child")


def released(lock: Path, timeout: float = 2.0) -> bool:
    """Whether the flock its holder took on ``lock`` is released (the holder died)
    within ``timeout``: no need to see the holder, which may be out of our sight."""
    fd = os.open(lock, os.O_RDWR)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
    finally:
        os.close(fd)


def test_killpg_reaches_the_agents_own_children(harness: Harness, tmp_path: Path) -> None:
    agent = harness.launch(write_agent(tmp_path / "forker", agents.FORKER))
    agent.line()  # its child is born
    grandchild = only_child(agent.pid)
    assert os.getpgid(grandchild) == agent.pid
    os.killpg(agent.pid, signal.SIGTERM)
    # a plain process dies of it; pid 1 of its own namespace exits 128 + SIGTERM
    assert harness.wait_exit(agent.pid).returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
    assert wait_gone([grandchild]) == []


def test_setup_failure_exits_127_with_a_message(harness: Harness, tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "agent", agents.QUIT_AT_ONCE)
    log = tmp_path / "agent.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
    missing = str(tmp_path / "missing")
    spec = LaunchSpec("lost", missing, {}, NO_LIMITS, (missing,), (), None)
    try:
        launched = harness.launcher.spawn(spec, fd)
    finally:
        os.close(fd)
    harness.open_fds.update((launched.stdin, launched.stdout))
    assert harness.wait_exit(launched.pid).returncode == 127
    assert "cannot start agent lost" in log.read_text()
    assert directory.exists()


# --- Resource limits ---------------------------------------------------------------------


def test_memory_limit_refuses_a_big_allocation(harness: Harness, tmp_path: Path) -> None:
    limits = Rlimits(200 << 20, None, None, None, None)
    agent = harness.launch(write_agent(tmp_path / "hog", agents.MEMORY_HOG), limits=limits)
    exited = harness.wait_exit(agent.pid)
    assert exited.returncode != 0
    assert exited.returncode < 0 or "MemoryError" in agent.stderr()


def test_cpu_limit_kills_a_busy_loop(harness: Harness, tmp_path: Path) -> None:
    limits = Rlimits(None, 1, None, None, None)
    agent = harness.launch(write_agent(tmp_path / "spinner", agents.SPINNER), limits=limits)
    assert agent.line() == "spinning"
    exited = harness.wait_exit(agent.pid, timeout=15.0)
    assert exited.returncode in (-signal.SIGXCPU, -signal.SIGKILL)


def test_file_size_limit_stops_a_big_write(harness: Harness, tmp_path: Path) -> None:
    limits = Rlimits(None, None, None, 1 << 20, None)
    directory = write_agent(tmp_path / "writer", agents.BIG_WRITER)
    agent = harness.launch(directory, limits=limits)
    assert agent.line() == "EFBIG"
    assert harness.wait_exit(agent.pid).returncode == 0
    assert (directory / "big.bin").stat().st_size <= 1 << 20


# --- Sandbox -----------------------------------------------------------------------------


def test_sandbox_allows_only_the_agent_directory_and_no_network(
        harness: Harness, tmp_path: Path) -> None:
    status = harness.launcher.sandbox_status
    if status != "namespaces":
        assert status.startswith("rlimits only: ")
        assert status.removeprefix("rlimits only: ").strip()
        pytest.skip(status)
    directory = write_agent(tmp_path / "probe", agents.PROBE)
    sibling = harness.launch(write_agent(tmp_path / "sibling", agents.SLEEPER))
    assert sibling.line() == "ready"
    stolen = tmp_path / "sibling" / "stolen"
    outside = tmp_path / "outside"
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        env = {"OUTSIDE": str(outside), "PORT": str(port),
               "SIBLING": f"/proc/{sibling.pid}/root{stolen}"}
        agent = harness.launch(directory, env=env)
        report = json.loads(agent.line())
        assert harness.wait_exit(agent.pid).returncode == 0
    os.kill(sibling.pid, signal.SIGKILL)
    harness.wait_exit(sibling.pid)

    assert report["outside"] in ("EROFS", "EACCES")
    assert not outside.exists()
    assert report["inside"] == "ok"
    assert (directory / "inside.txt").read_text() == "x"
    assert report["src"] in ("EROFS", "EACCES")
    assert not (directory / "src" / "new.py").exists()
    assert report["net"] != "ok"
    # EACCES, EPERM: its root is out of reach; ENOENT: alone in its pid namespace, the
    # sibling does not even exist for it.
    assert report["sibling"] in ("EACCES", "EPERM", "ENOENT")
    assert not stolen.exists()
    assert int(report["capabilities"], 16) == 0


def test_without_sandbox_only_rlimits_apply(tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "probe", agents.PROBE)
    outside = tmp_path / "outside"
    with ForkServerLauncher(sandbox=False) as launcher, \
            socket.create_server(("127.0.0.1", 0)) as server:
        assert launcher.sandbox_status == "rlimits only: sandbox disabled"
        harness = Harness(launcher)
        env = {"OUTSIDE": str(outside), "PORT": str(server.getsockname()[1]),
               "SIBLING": str(tmp_path / "elsewhere")}
        agent = harness.launch(directory, env=env)
        report = json.loads(agent.line())
        harness.close_fds()
    assert report["outside"] == "ok"
    assert report["net"] == "ok"


# --- Dying together ----------------------------------------------------------------------


def test_agents_and_fork_server_die_with_the_orchestrator(tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "sleeper", agents.SLEEPER)
    script = tmp_path / "orchestrator.py"
    script.write_text(agents.ORCHESTRATOR)
    with subprocess.Popen([sys.executable, str(script), str(directory)],
                          stdout=subprocess.PIPE, text=True) as orchestrator:
        assert orchestrator.stdout is not None
        pids: list[int] = json.loads(orchestrator.stdout.readline())
        server = psutil.Process(pids[0]).ppid()
        assert psutil.Process(server).ppid() == orchestrator.pid
        orchestrator.kill()
        orchestrator.wait()
    assert wait_gone([*pids, server]) == []


def kill_server_of(agent: Agent) -> int:
    server = psutil.Process(agent.pid).ppid()
    os.kill(server, signal.SIGKILL)
    return server


def test_a_dead_fork_server_is_replaced_and_its_agents_reported_killed(
        tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "sleeper", agents.SLEEPER)
    with ForkServerLauncher() as launcher:
        harness = Harness(launcher)
        fileno = launcher.fileno()
        first = harness.launch(directory)
        assert first.line() == "ready"
        first_server = kill_server_of(first)
        # Noticed through fileno(): the agent is reported killed, the server dead.
        assert harness.wait_exit(first.pid).returncode == -signal.SIGKILL
        assert not launcher.alive

        second = harness.launch(directory)  # a new server, transparently
        assert second.line() == "ready"
        assert launcher.alive
        second_server = kill_server_of(second)
        assert second_server != first_server
        deadline = time.monotonic() + TIMEOUT
        while launcher.alive and time.monotonic() < deadline:
            time.sleep(0.01)

        # Replaced before its end was read: its agent is still reported, once.
        third = harness.launch(directory)
        assert third.line() == "ready"
        assert harness.wait_exit(second.pid).returncode == -signal.SIGKILL
        assert launcher.fileno() == fileno
        harness.close_fds()
    assert wait_gone([first.pid, second.pid, third.pid]) == []


def test_a_bad_stderr_fd_is_refused_without_harm(harness: Harness, tmp_path: Path) -> None:
    unused = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1
    with pytest.raises(OSError):
        os.fstat(unused)
    directory = write_agent(tmp_path / "echo", agents.HELLO_ECHO)
    with pytest.raises(LaunchError, match="cannot send"):
        harness.launcher.spawn(spec_for(directory), unused)
    assert harness.launcher.alive
    agent = harness.launch(directory)
    assert json.loads(agent.line())["type"] == "hello"
    agent.close_stdin()
    assert harness.wait_exit(agent.pid).returncode == 0


def test_spawn_refuses_relative_paths(harness: Harness) -> None:
    spec = LaunchSpec("relative", "agents/a", {}, NO_LIMITS, ("agents/a",), (), None)
    with pytest.raises(LaunchError, match="absolute"):
        harness.launcher.spawn(spec, 2)


def test_spawn_needs_a_started_launcher(tmp_path: Path) -> None:
    launcher = ForkServerLauncher()
    with pytest.raises(LaunchError, match="not started"):
        launcher.spawn(spec_for(tmp_path), 2)
    launcher.start()
    launcher.close()
    assert not launcher.alive
    with pytest.raises(LaunchError, match="not started"):
        launcher.spawn(spec_for(tmp_path), 2)


# --- Fds and speed -----------------------------------------------------------------------


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_leaks(harness: Harness, tmp_path: Path) -> None:
    directory = write_agent(tmp_path / "quick", agents.QUIT_AT_ONCE)
    before = open_fd_count()
    launched = [harness.launch(directory) for _ in range(50)]
    for agent in launched:
        assert harness.wait_exit(agent.pid).returncode == 0
    harness.close_fds()
    assert abs(open_fd_count() - before) <= 2


def test_two_hundred_agents_say_hello(harness: Harness, tmp_path: Path) -> None:
    directories = [write_agent(tmp_path / f"agent-{n}", agents.HELLO_WAIT)
                   for n in range(200)]
    start = time.perf_counter()
    launched = [harness.launch(directory) for directory in directories]
    spawned = time.perf_counter() - start
    for agent in launched:
        assert json.loads(agent.line())["type"] == "hello"
    hellos = time.perf_counter() - start
    for agent in launched:
        agent.close_stdin()
    harness.open_fds.difference_update(agent.launched.stdin for agent in launched)
    codes = {harness.wait_exit(agent.pid).returncode for agent in launched}
    total = time.perf_counter() - start
    print(f"200 agents: spawned in {spawned:.3f} s, all hellos at {hellos:.3f} s, "
          f"all exits at {total:.3f} s")
    assert codes == {0}
    assert total < 20.0



# --- Processes: a pids cgroup per agent ---------------------------------------------------


def _needs_pids_cgroup(launcher: ForkServerLauncher) -> None:
    # Root without cgroups has no limit on an agent's processes but the supervisor's
    # per-pass count; anyone else can still run the other tests.
    if launcher.pids_status != "pids cgroup" and not root_powers():
        pytest.skip(f"not root and {launcher.pids_status}")
    assert launcher.pids_status == "pids cgroup"


def test_fork_stops_at_the_process_limit(harness: Harness, tmp_path: Path) -> None:
    _needs_pids_cgroup(harness.launcher)
    limits = Rlimits(None, None, None, None, 5)
    agent = harness.launch(write_agent(tmp_path / "bomb", agents.FORK_UNTIL_REFUSED),
                           limits=limits)
    report = json.loads(agent.line())
    assert report == {"children": 4, "refused": "EAGAIN"}  # 5 tasks with the agent
    os.killpg(agent.pid, signal.SIGKILL)
    harness.wait_exit(agent.pid)


def test_what_an_agent_leaves_behind_dies_with_it(harness: Harness, tmp_path: Path) -> None:
    """Its pid namespace ends with it; without one, its pids cgroup is emptied."""
    if harness.launcher.sandbox_status != "namespaces":
        _needs_pids_cgroup(harness.launcher)
    agent = harness.launch(write_agent(tmp_path / "escape", agents.LEAVE_AN_ESCAPEE),
                           limits=Rlimits(None, None, None, None, 8))
    agent.line()  # it has left a process behind, in a session of its own
    assert harness.wait_exit(agent.pid).returncode == 0
    assert released(tmp_path / "escape" / "held")


def test_groups_of_a_killed_fork_server_are_swept(tmp_path: Path) -> None:
    with ForkServerLauncher() as first:
        _needs_pids_cgroup(first)
        assert first._process is not None
        server = first._process.pid
        base = Path(_cgroups.own_pids_cgroup())
        mine = base / f"{_cgroups.PREFIX}{server}"
        directory = write_agent(tmp_path / "a", agents.HELLO_WAIT)
        fd = os.open(directory / "log", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC)
        launched = first.spawn(spec_for(directory, limits=Rlimits(None, None, None, None, 4)),
                               fd)
        os.close(fd)
        assert [p.name for p in mine.iterdir() if p.name.startswith("agent-")]
        os.kill(server, signal.SIGKILL)  # no chance to clean up: its groups stay
        first._process.wait()
        assert wait_gone([launched.pid]) == []
        assert mine.exists()
        for end in (launched.stdin, launched.stdout):
            os.close(end)
    with ForkServerLauncher() as second:
        assert second.pids_status == "pids cgroup"
        assert not mine.exists()
        assert second._process is not None
        theirs = base / f"{_cgroups.PREFIX}{second._process.pid}"
        assert theirs.exists()
    assert not theirs.exists()  # a server that closes cleans up after itself


def test_usage_adds_up_every_process_of_the_group() -> None:
    """An agent is all its processes: three of 40 MB each are 120 MB, not the leader's."""
    from evolve_ai.services.forkserver_launcher import measure_groups

    code = ("import os, sys, time\n"
            "for _ in range(2):\n"
            "    if os.fork() == 0:\n"
            "        keep = bytearray(40 << 20)\n"
            "        time.sleep(30)\n"
            "        os._exit(0)\n"
            "keep = bytearray(40 << 20)\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            usage = measure_groups([proc.pid])[proc.pid]
            if usage.processes == 3 and usage.rss is not None and usage.rss >= 120 << 20:
                break
            time.sleep(0.05)
        assert usage.processes == 3
        assert usage.rss is not None and usage.rss >= 120 << 20
        assert usage.cpu is not None and usage.cpu >= 0.0
        assert measure_groups([proc.pid + 10**7]) == {}  # no such group: nothing
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_an_agent_is_alone_in_its_pid_namespace(harness: Harness, tmp_path: Path) -> None:
    """It sees no other process, so it can signal neither the orchestrator nor a
    sibling; the host's /run (its sockets) is hidden under an empty tmpfs."""
    if harness.launcher.sandbox_status != "namespaces":
        pytest.skip(harness.launcher.sandbox_status)
    sibling = harness.launch(write_agent(tmp_path / "sibling", agents.SLEEPER))
    assert sibling.line() == "ready"
    env = {"ORCHESTRATOR": str(os.getpid()), "SIBLING": str(sibling.pid)}
    agent = harness.launch(write_agent(tmp_path / "probe", agents.PID_PROBE), env=env)
    report = json.loads(agent.line())
    assert harness.wait_exit(agent.pid).returncode == 0
    os.kill(sibling.pid, signal.SIGKILL)
    harness.wait_exit(sibling.pid)
    assert report["pid"] == 1
    assert report["visible"] == [1]
    assert report["orchestrator"] == "ESRCH" and report["sibling"] == "ESRCH"
    assert report["run"] in (None, [])


def test_an_agent_of_a_root_orchestrator_runs_as_its_own_uid(
        harness: Harness, open_path: Path) -> None:
    """Root's file access is gone (no /etc/shadow, no sibling's files); its own directory
    is handed over to it and stays writable."""
    if not root_powers() or harness.launcher.sandbox_status != "namespaces":
        pytest.skip("only a root orchestrator with the sandbox gives agents their own uid")
    tmp_path = open_path
    secret = write_agent(tmp_path / "sibling", agents.SLEEPER)
    sibling = harness.launch(secret, uid=230_001)
    assert sibling.line() == "ready"
    probe = write_agent(tmp_path / "probe", agents.UID_PROBE)
    agent = harness.launch(probe, uid=230_002,
                           env={"SIBLING": str(secret / "src" / "agent" / "main.py")})
    report = json.loads(agent.line())
    assert harness.wait_exit(agent.pid).returncode == 0
    os.kill(sibling.pid, signal.SIGKILL)
    harness.wait_exit(sibling.pid)
    assert (report["uid"], report["gid"], report["groups"]) == (230_002, 230_002, [])
    assert report["shadow"] == "EACCES"
    assert report["sibling"] == "EACCES"  # its directory is closed to others (0700)
    assert report["inside"] == "ok"
    assert (probe / "mine.txt").stat().st_uid == 230_002
    assert probe.stat().st_uid == 230_002 and probe.stat().st_mode & 0o077 == 0


def test_an_agent_cannot_make_a_user_namespace(harness: Harness, tmp_path: Path) -> None:
    """In a user namespace of its own it would hold every capability there: refused."""
    if harness.launcher.sandbox_status != "namespaces":
        pytest.skip(harness.launcher.sandbox_status)
    agent = harness.launch(write_agent(tmp_path / "probe", agents.USERNS_PROBE))
    report = json.loads(agent.line())
    assert harness.wait_exit(agent.pid).returncode == 0
    assert report["unshare"] in ("ENOSPC", "EPERM")


def test_without_the_lock_a_user_namespace_can_be_made(tmp_path: Path) -> None:
    """The probe agent's control: without the sandbox, the same call succeeds here."""
    with ForkServerLauncher(sandbox=False) as launcher:
        harness = Harness(launcher)
        agent = harness.launch(write_agent(tmp_path / "probe", agents.USERNS_PROBE))
        report = json.loads(agent.line())
        assert harness.wait_exit(agent.pid).returncode == 0
        harness.close_fds()
    if os.path.exists("/proc/sys/user/max_user_namespaces") and \
            Path("/proc/sys/user/max_user_namespaces").read_text().strip() != "0":
        assert report["unshare"] == "ok"


def test_a_directory_once_handed_to_an_agent_uid_is_taken_back(
        harness: Harness, tmp_path: Path) -> None:
    """Run once with a uid of its own, then without (the setting changed): still runs."""
    if not root_powers() or harness.launcher.sandbox_status != "namespaces":
        pytest.skip("only a root orchestrator gives agents their own uid")
    directory = write_agent(tmp_path / "agent", agents.UID_PROBE)
    os.chown(directory, 230_003, 230_003)
    directory.chmod(0o700)
    agent = harness.launch(directory, env={"SIBLING": "/nonexistent"})
    report = json.loads(agent.line())
    assert harness.wait_exit(agent.pid).returncode == 0
    assert report["inside"] == "ok" and report["uid"] == 0
    assert directory.stat().st_uid == 0


def test_a_memory_cgroup_holds_the_whole_agent(harness: Harness, tmp_path: Path) -> None:
    """With a memory cgroup the kernel itself stops an agent at its limit, between two
    of the supervisor's passes as well; without one, the same agent runs."""
    if harness.launcher.memory_status != "memory cgroup":
        pytest.skip(harness.launcher.memory_status)
    directory = write_agent(tmp_path / "big", agents.TOUCH_100MB)
    log = directory / "agent.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
    try:
        spec = dataclasses.replace(spec_for(directory), memory_bytes=48 << 20)
        held = harness.launcher.spawn(spec, fd)
        free = harness.launcher.spawn(spec_for(write_agent(tmp_path / "free",
                                                           agents.TOUCH_100MB)), fd)
    finally:
        os.close(fd)
    harness.open_fds.update((held.stdin, held.stdout, free.stdin, free.stdout))
    assert Agent(free, log).line() == "touched"
    assert harness.wait_exit(free.pid).returncode == 0
    assert harness.wait_exit(held.pid).returncode == -signal.SIGKILL  # the OOM killer


def test_an_agent_with_its_own_uid_dies_with_the_fork_server(
        harness: Harness, open_path: Path) -> None:
    """A change of uid clears the parent-death signal; the agent arms it again."""
    if not root_powers() or harness.launcher.sandbox_status != "namespaces":
        pytest.skip("only a root orchestrator gives agents their own uid")
    agent = harness.launch(write_agent(open_path / "keeper", agents.KEEPER), uid=230_020)
    assert agent.line() == "kept"
    kill_server_of(agent)
    assert wait_gone([agent.pid]) == []


def test_what_an_agent_kept_follows_it_to_a_new_uid(harness: Harness, open_path: Path) -> None:
    """Its state written under one uid stays its own under another, and as root again."""
    if not root_powers() or harness.launcher.sandbox_status != "namespaces":
        pytest.skip("only a root orchestrator gives agents their own uid")
    directory = write_agent(open_path / "keeper", agents.KEEPER)
    for uid in (230_021, 230_022, None):
        agent = harness.launch(directory, uid=uid)
        assert agent.line() == "kept", agent.stderr()
        os.kill(agent.pid, signal.SIGKILL)
        harness.wait_exit(agent.pid)
        assert (directory / "data" / "state").stat().st_uid == (uid or 0)
    assert (directory / "data" / "state").read_text() == "xxx"
