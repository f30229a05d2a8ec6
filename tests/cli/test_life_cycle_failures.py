"""The life cycle against agents that crash, cheat, hog and flood: real processes only."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import msgpack
import psutil
import pytest

from evolve_ai.testing import (
    FAST_SETTINGS,
    agent_processes,
    evolve_command,
    init_workspace,
    read_events,
    run_evolve,
    set_config,
    start_life_cycle,
    status_json,
    stop_life_cycle,
    wait_until,
    write_genome,
    write_template,
)
from tests.helpers import WITHOUT_ROOT_POWERS, user_namespaces_allowed

SOLVER = "def last(terms):\n    return terms[-1] if terms else None\n"


def make_workspace(tmp_path: Path, modules: dict[str, str], count: int,
                   extra: Mapping[str, object] | None = None) -> Path:
    template = write_template(tmp_path / "tpl", {"solver": SOLVER, **modules})
    # No selection here: these tests watch individual agents, not evolution.
    root = init_workspace(tmp_path / "ws", count, template=template, seed=1, settings={
        **FAST_SETTINGS, "population.size": count, "selection.strategy": "none",
        **(extra or {})})
    for agent in (root / "agents").iterdir():  # every agent: the solver only
        write_genome(agent, {"src/agent/solver.py": ["last"]})
    return root


def test_crash_at_import_backs_off_then_disables_while_others_run(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {"crashy": "raise RuntimeError('boom at import')\n"
                                               "def f(terms):\n    return 0\n"}, 4)
    victim = sorted(p.name for p in (root / "agents").iterdir())[0]
    write_genome(root / "agents" / victim, {"src/agent/crashy.py": ["f"]})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["counts"]["disabled"] == 1, 30, "disabled")
        assert status_json(root)["counts"]["running"] == 3
    finally:
        stop_life_cycle(proc)
    delays = [e["delay"] for e in read_events(root, "restarted", agent=victim)]
    assert delays == [0.2, 0.4, 0.8]
    crashes = read_events(root, "crashed", agent=victim)
    assert len(crashes) == 4 and all(c["returncode"] == 1 for c in crashes)
    starts = [float(e["time"]) for e in read_events(root, "started", agent=victim)]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=False))
    assert gaps == sorted(gaps)  # the wait grows
    shown = json.loads(run_evolve(root, "show", victim, "--json").stdout)
    assert shown["status"] == "disabled"
    assert shown["reason"] == "crashed 4 times in a row"
    log = (root / "logs" / "agents" / f"{victim}.log").read_text()
    assert "RuntimeError: boom at import" in log


def test_an_agent_that_dies_after_running_a_while_is_restarted(tmp_path: Path) -> None:
    late = ("import os, threading\n"
            "threading.Timer(0.5, lambda: os._exit(7)).start()\n"
            "def f(terms):\n    return None\n")
    root = make_workspace(tmp_path, {"late": late}, 2)
    victim = sorted(p.name for p in (root / "agents").iterdir())[0]
    write_genome(root / "agents" / victim, {"src/agent/late.py": ["f"],
                                            "src/agent/solver.py": ["last"]})
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: len(read_events(root, "crashed", agent=victim)) >= 2, 30, "two crashes")
    finally:
        stop_life_cycle(proc)
    crashes = read_events(root, "crashed", agent=victim)
    assert crashes[0]["returncode"] == 7 and crashes[0]["ran"] >= 0.4
    assert [e["delay"] for e in read_events(root, "restarted", agent=victim)][:2] == [0.2, 0.4]


HOSTILE_GENOMES = {
    "traversal": {"schema": 1, "files": [{"path": "../../../etc/passwd", "active": True}]},
    "unknown function": {"schema": 1, "files": [{"path": "src/agent/solver.py", "active": True,
                                                 "functions": {"__import__": True}}]},
    "wrong types": {"schema": "1", "files": "all"},
}


def test_hostile_genomes_and_tampered_code_are_quarantined(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {}, 6)
    agents = sorted(p for p in (root / "agents").iterdir())
    written = {}
    for agent, genome in zip(agents, HOSTILE_GENOMES.values(), strict=False):
        data = msgpack.packb(genome)
        (agent / "genome.bin").write_bytes(data)
        written[agent.name] = data
    noise = agents[3]
    (noise / "genome.bin").write_bytes(b"\xff" * 4096)
    written[noise.name] = b"\xff" * 4096
    tampered = agents[4]
    marker = tmp_path / "executed"
    (tampered / "src" / "agent" / "solver.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n" + SOLVER)
    result = run_evolve(root, "life-cycle", "--once")
    assert result.returncode == 0, result.stderr
    status = status_json(root)
    assert status["counts"]["quarantined"] == 5
    assert status["counts"]["active"] == 1
    for name, data in written.items():
        assert (root / "agents" / name / "genome.bin").read_bytes() == data  # untouched
        reason = json.loads(run_evolve(root, "show", name, "--json").stdout)["reason"]
        assert reason.startswith("invalid genome: ")
    shown = json.loads(run_evolve(root, "show", tampered.name, "--json").stdout)
    assert shown["reason"] == "tampered: src/agent/solver.py differs from the template"
    assert not marker.exists()  # its code never ran
    assert not (root / "logs" / "agents" / f"{tampered.name}.log").exists()


def test_a_running_agent_whose_code_is_tampered_is_stopped(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {}, 2)
    victim = sorted(p for p in (root / "agents").iterdir())[0]
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["counts"]["running"] == 2, 30, "running")
        (victim / "src" / "agent" / "extra.py").write_text("x = 1\n")
        wait_until(lambda: status_json(root)["counts"]["quarantined"] == 1, 10, "quarantine")
        wait_until(lambda: status_json(root)["counts"]["running"] == 1, 10, "stopped")
        assert not [p for p in agent_processes(root) if p.cwd() == str(victim)]
    finally:
        stop_life_cycle(proc)


HOGS = {
    "memory": "def hog(terms):\n    global keep\n    keep = bytearray(2 * 1024 ** 3)\n"
              "    return 1\n",
    "busy": "def hog(terms):\n    while True:\n        pass\n",
    # Small files, as fast as it can, in its own directory (the one place it may write).
    "disk": ("import os\n"
             "def hog(terms):\n"
             "    os.makedirs('junk', exist_ok=True)\n"
             "    for n in range(100000):  # bounded, for the test machine's sake\n"
             "        with open(f'junk/{n}', 'wb') as out:\n"
             "            out.write(b'x' * 4096)\n"
             "    return None\n"),
    # Each child stays under the per-process limit; together they are far over it.
    "children": ("import os, time\n"
                 "def hog(terms):\n"
                 "    for _ in range(4):\n"
                 "        if os.fork() == 0:\n"
                 "            keep = bytearray(90 * 1024 * 1024)\n"
                 "            time.sleep(60)\n"
                 "            os._exit(0)\n"
                 "    time.sleep(60)\n"),
    "forks": ("import os, time\n"
              "def hog(terms):\n"
              "    for _ in range(200):  # bounded, for the test machine's sake\n"
              "        try:\n"
              "            if os.fork() == 0:\n"
              "                time.sleep(60)\n"
              "                os._exit(0)\n"
              "        except OSError:\n"
              "            break\n"
              "    time.sleep(60)\n"),
    "flood": ("import os\n"
              "def hog(terms):\n"
              "    chunk = b'x' * (1 << 20)\n"
              "    for _ in range(1024):\n"
              "        os.write(1, chunk)\n"
              "    os.write(1, b'\\n')\n"
              "    return None\n"),
}


@pytest.mark.parametrize("kind", sorted(HOGS))
def test_hogs_are_contained(tmp_path: Path, kind: str) -> None:
    extra = {"limits.memory_mb": 200, "limits.cpu_seconds": 2, "limits.processes": 8,
             "limits.files": 500, "evaluation.answer_timeout": 1.0}
    root = make_workspace(tmp_path, {"hog": HOGS[kind]}, 3, extra)
    victim = sorted(p.name for p in (root / "agents").iterdir())[0]
    write_genome(root / "agents" / victim, {"src/agent/hog.py": ["hog"]})
    proc = start_life_cycle(root)
    orchestrator = psutil.Process(proc.pid)
    peak = 0
    most_processes = 0  # of the victim, for the fork bomb
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            peak = max(peak, orchestrator.memory_info().rss)
            if kind == "forks":
                # The kernel stops it at the limit (its pids cgroup, or RLIMIT_NPROC
                # for a user): it never gets past it, and the others never notice.
                most_processes = max(most_processes, len(
                    [p for p in agent_processes(root) if _cwd(p) == str(root / "agents" / victim)]))
                done = read_events(root, "crashed", agent=victim) or most_processes >= 8
            elif kind == "flood":
                done = [e for e in read_events(root) if e["event"] == "pass_done"][5:]
            elif kind == "disk":
                done = read_events(root, "disabled", agent=victim)
            else:
                done = read_events(root, "crashed", agent=victim)
            if done:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"{kind}: never contained")
        if kind == "forks":
            for _ in range(40):  # two more seconds: still held at the limit
                most_processes = max(most_processes, len(
                    [p for p in agent_processes(root) if _cwd(p) == str(root / "agents" / victim)]))
                time.sleep(0.05)
        others = [a for a in (root / "agents").iterdir() if a.name != victim]
        wait_until(lambda: status_json(root)["counts"]["running"] >= len(others), 10,
                   "the others running")
        assert proc.poll() is None
    finally:
        stop_life_cycle(proc)
    assert peak < 200 * 1024 * 1024
    assert agent_processes(root) == []
    if kind == "disk":  # stopped at its budget, long before the 100,000 files it wanted
        assert "limits.files" in read_events(root, "disabled", agent=victim)[0]["reason"]
        assert len(list((root / "agents" / victim / "junk").iterdir())) < 100_000
    if kind == "children":  # the sum over the agent's processes was over the limit
        limits = [e for e in read_events(root, "limit", agent=victim) if e["what"] == "memory"]
        assert limits and limits[0]["value"] > 200 * 1024 * 1024
    if kind == "forks":
        assert most_processes <= 8, f"the fork bomb reached {most_processes} processes"
        assert len(psutil.pids()) < 5000


def _cwd(process: psutil.Process) -> str:
    try:
        return process.cwd()
    except psutil.Error:
        return ""



def test_above_max_running_agents_take_turns(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {}, 6)
    set_config(root, {"lifecycle.max_running": 2, "lifecycle.turn_passes": 2})
    ids = {agent.name for agent in (root / "agents").iterdir()}
    proc = start_life_cycle(root)
    most, turns_of = 0, dict.fromkeys(ids, 0)
    try:
        deadline = time.monotonic() + 60
        while min(turns_of.values()) < 2:  # everyone had two turns at least
            assert time.monotonic() < deadline, f"turns so far: {turns_of}"
            running = {_cwd(p) for p in agent_processes(root)} - {""}
            most = max(most, len(running))
            turns_of = dict.fromkeys(ids, 0)
            for event in read_events(root):
                if event["event"] == "stopped" and event.get("reason") == "turn":
                    turns_of[str(event["agent"])] += 1
            time.sleep(0.02)
    finally:
        stop_life_cycle(proc)
    assert most <= 2, f"{most} agents ran at once with max_running = 2"
    assert agent_processes(root) == []


def test_births_get_a_turn_before_founders_that_never_ran(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {}, 10)
    # min_evaluations 0: generations close without waiting for every founder's
    # measurement, so that founders that never ran are still there at the first birth.
    set_config(root, {"lifecycle.max_running": 2, "lifecycle.turn_passes": 1,
                      "selection.strategy": "truncation", "selection.every": 2,
                      "selection.elite": 0, "selection.min_evaluations": 0})
    proc = start_life_cycle(root)
    try:
        def a_birth_started() -> bool:
            born = {e["agent"] for e in read_events(root) if e["event"] == "born"}
            return any(e["event"] == "started" and e["agent"] in born for e in read_events(root))

        wait_until(a_birth_started, 60, "a born agent started")
    finally:
        stop_life_cycle(proc)
    log = read_events(root)
    first_birth = next(i for i, e in enumerate(log) if e["event"] == "born")
    born = {e["agent"] for e in log if e["event"] == "born"}
    ran_before = {e["agent"] for e in log[:first_birth] if e["event"] == "started"}
    starts_after = [e["agent"] for e in log[first_birth:] if e["event"] == "started"]
    founders_waiting = {p.name for p in (root / "agents").iterdir()} - born - ran_before
    assert founders_waiting, "every founder ran before the first birth: nothing to compare"
    first_new = next(agent for agent in starts_after if agent not in ran_before)
    assert first_new in born, "a founder that never ran went before the newborn"


def test_a_broken_template_is_refused_and_the_kept_version_runs(tmp_path: Path) -> None:
    """A template that cannot be used (here a bad pyproject.toml, which would only show
    at a birth) is refused once, with an error; the version kept at init runs on."""
    root = make_workspace(tmp_path, {}, 4, {"selection.strategy": "truncation",
                                            "population.size": 6, "selection.every": 1})
    kept = status_json(root)["template"]["newest"]
    (root / "agent_template" / "pyproject.toml").write_text("[project\nname = ")
    result = run_evolve(root, "life-cycle", "--generations", "2")
    assert result.returncode == 0, result.stderr
    [refused] = read_events(root, "template_refused")
    assert "pyproject.toml" in refused["reason"]
    assert "Traceback" not in result.stderr and "template_refused" in result.stderr
    status = status_json(root)
    assert status["generation"] == 2 and status["counts"]["quarantined"] == 0
    assert (status["template"]["newest"], status["template"]["versions"]) == (kept, 1)
    assert "pyproject.toml" in status["template"]["refused"]  # until it is fixed
    for agent in (root / "agents").iterdir():
        shown = json.loads(run_evolve(root, "show", agent.name, "--json").stdout)
        assert shown["template"] == kept


def test_a_broken_template_with_no_version_kept_stops_the_start(tmp_path: Path) -> None:
    """Nothing to fall back on (the kept versions are gone): one line, exit 1, nobody
    harmed."""
    root = make_workspace(tmp_path, {}, 4, {"selection.strategy": "truncation",
                                            "population.size": 6, "selection.every": 1})
    shutil.rmtree(root / "workspace" / "templates")
    (root / "agent_template" / "pyproject.toml").write_text("[project\nname = ")
    result = run_evolve(root, "life-cycle", "--generations", "2")
    assert result.returncode == 1
    assert "pyproject.toml" in result.stderr and "Traceback" not in result.stderr
    status = status_json(root)
    assert status["generation"] == 0
    assert status["counts"]["active"] == 4 and status["counts"]["dead"] == 0


IMMORTAL = '''\
import os
import msgpack

# At every start, a new genome (one more mutation counted) before anyone can measure it.
with open("genome.bin", "rb") as handle:
    genome = msgpack.unpackb(handle.read(), raw=False)
genome["mutations"] = genome.get("mutations", 0) + 1
with open("genome.tmp", "wb") as handle:
    handle.write(msgpack.packb(genome, use_bin_type=True))
os.replace("genome.tmp", "genome.bin")


def f(terms):
    return None
'''


def test_an_agent_that_rewrites_its_genome_at_every_start_is_not_immortal(
        tmp_path: Path) -> None:
    """Never measured, it was never judged, and outlived everyone. Now, past
    selection.unmeasured_rewrites rewrites in a row it counts as fitness 0, and dies."""
    arithmetic = "def step(terms):\n    return 2 * terms[-1] - terms[-2]\n"
    root = make_workspace(tmp_path, {"immortal": IMMORTAL, "arithmetic": arithmetic}, 4, {
        "selection.strategy": "truncation", "selection.every": 3, "population.size": 4,
        "selection.min_evaluations": 2, "selection.unmeasured_rewrites": 2,
        "evaluation.energy_cost": 0.0})
    rewriter, *others = sorted(p.name for p in (root / "agents").iterdir())
    for other in others:  # they answer arithmetic sequences: a fitness above 0
        write_genome(root / "agents" / other, {"src/agent/arithmetic.py": ["step"]})
    write_genome(root / "agents" / rewriter, {"src/agent/immortal.py": ["f"],
                                              "src/agent/arithmetic.py": ["step"]})
    result = run_evolve(root, "life-cycle", "--generations", "4", "--seed", "1")
    assert result.returncode == 0, result.stderr
    limits = [e for e in read_events(root, "limit", agent=rewriter)
              if e["what"] == "unmeasured_rewrites"]
    assert limits
    died = read_events(root, "died", agent=rewriter)
    assert died and died[0]["fitness"] == 0.0
    assert len(read_events(root, "mutated", agent=rewriter)) <= 3 * 4 + 1  # one a pass at most


KILLER = '''\
import os
import signal

# Every process it can see, and then everyone it may signal at all (kill -1). Only when
# it is pid 1 of a namespace of its own: elsewhere kill -1 would reach the test machine.
for name in os.listdir("/proc") if os.getpid() == 1 else ():
    if name.isdigit() and int(name) != os.getpid():
        try:
            os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass
try:
    if os.getpid() == 1:
        os.kill(-1, signal.SIGKILL)
except OSError:
    pass


def f(terms):
    return None
'''


@pytest.mark.parametrize("powers", ["as run", "without root's powers"])
def test_an_agent_that_kills_everything_it_sees_harms_nobody(open_path: Path,
                                                             powers: str) -> None:
    """Alone in its pid namespace, an agent sees no other process: the orchestrator, the
    fork server and its siblings survive its attacks, pass after pass. Without root's
    powers (as the shipped systemd unit runs) too: that is the user-namespace path."""
    unprivileged = powers != "as run"
    if unprivileged and os.geteuid() != 0:
        pytest.skip("not root: the first case ran without root's powers")
    if unprivileged and not user_namespaces_allowed():
        pytest.skip("this kernel gives unprivileged users no user namespace")
    template = write_template(open_path / "tpl", {"solver": SOLVER, "killer": KILLER})
    root = init_workspace(open_path / "ws", 4, template=template, seed=1, settings={
        **FAST_SETTINGS, "population.size": 4, "selection.strategy": "none"})
    agents = sorted(p.name for p in (root / "agents").iterdir())
    for agent in agents:
        write_genome(root / "agents" / agent, {"src/agent/solver.py": ["last"]})
    write_genome(root / "agents" / agents[0], {"src/agent/killer.py": ["f"],
                                               "src/agent/solver.py": ["last"]})
    proc = (subprocess.Popen([*WITHOUT_ROOT_POWERS, *evolve_command(), "--root", str(root),
                              "life-cycle"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if unprivileged else start_life_cycle(root))
    try:
        wait_until(lambda: len(read_events(root, "pass_done")) >= 10
                   and read_events(root, "started", agent=agents[0]), 30,
                   "ten passes with the killer started")
        [sandbox] = [e for e in read_events(root) if e["event"].startswith("sandbox")]
        if unprivileged:
            assert sandbox["uids"].startswith("evolve's own: evolve runs as root without")
        elif sandbox["sandbox"] != "namespaces":
            pytest.skip(f"no pid namespace here: {sandbox['sandbox']}")
        assert sandbox["sandbox"] == "namespaces"
        assert proc.poll() is None  # the orchestrator lives on
        for sibling in agents[1:]:  # and nobody else was ever hurt
            assert read_events(root, "crashed", agent=sibling) == []
        assert status_json(root)["counts"]["running"] >= 3
    finally:
        stop_life_cycle(proc)
