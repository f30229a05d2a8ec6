"""What a person at a terminal sees, on a real pty (pexpect): a calm life cycle with one
live panel, Ctrl-C that stops it with 130 and no traceback, `init` that ends its bar
and says one line, `status --watch`; and what cron sees: nothing when all is well."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pexpect

from evolve_ai.testing import (
    FAST_SETTINGS,
    evolve_command,
    init_workspace,
    read_events,
    run_evolve,
    start_life_cycle,
    stop_life_cycle,
    wait_until,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
EVENT_LINE = re.compile(r"\[(debug|info)\s*\]")  # structlog's console lines


def spawn(root: Path, *args: str) -> pexpect.spawn[str]:
    command = evolve_command()
    return pexpect.spawn(command[0], [*command[1:], "--root", str(root), *args],
                         dimensions=(50, 140), encoding="utf-8", timeout=60)


def finish(child: pexpect.spawn[str]) -> str:
    """Everything it printed until it exited (ANSI codes removed)."""
    child.expect(pexpect.EOF, timeout=90)
    child.close()
    return ANSI.sub("", child.before or "")


def test_the_life_cycle_shows_one_live_panel_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 12, seed=3,
                          settings={**FAST_SETTINGS, "selection.every": 3})
    child = spawn(root, "life-cycle")
    seen = ""
    passes: set[int] = set()
    deadline = time.monotonic() + 60
    while len(passes) < 3 or not read_events(root, "generation"):  # it updates in place
        assert time.monotonic() < deadline, seen[-2000:]
        child.expect([r"pass \d+", pexpect.TIMEOUT], timeout=5)
        seen += ANSI.sub("", (child.before or "") + str(child.after or ""))
        passes |= {int(n) for n in re.findall(r"pass (\d+)", seen)}
    child.sendintr()
    seen += finish(child)
    assert child.exitstatus == 130, seen[-2000:]
    assert "Traceback" not in seen and "KeyboardInterrupt" not in seen, seen
    assert "agents" in seen and "fitness" in seen and "generation" in seen
    assert not EVENT_LINE.search(seen), seen  # no per-agent line without -v
    assert "stopped (SIGINT)" in seen
    stopped = read_events(root, "life_cycle_stopped")
    assert stopped and stopped[-1]["reason"] == "SIGINT"
    assert not run_evolve(root, "agents", "--json").stdout.count('"running"')


def test_warnings_go_into_the_panel_not_over_it(tmp_path: Path) -> None:
    """A failing hook (an error, from the hooks' thread) is shown inside the panel; no
    raw log line is printed over it."""
    root = init_workspace(tmp_path / "ws", 4, seed=3, settings={
        **FAST_SETTINGS, "selection.every": 2, "hooks": ["json:loads"]})
    child = spawn(root, "life-cycle")
    child.expect("hook_failed", timeout=60)
    child.expect(r"pass \d+")  # and it goes on drawing
    child.sendintr()
    seen = finish(child)
    assert child.exitstatus == 130, seen
    assert not [line for line in seen.splitlines() if line.lstrip().startswith('{"')], seen
    assert "Traceback" not in seen


def test_with_v_every_event_reaches_the_terminal_and_no_panel(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 3, seed=3, settings=FAST_SETTINGS)
    child = spawn(root, "-v", "life-cycle", "--once")
    seen = finish(child)
    assert child.exitstatus == 0, seen
    assert EVENT_LINE.search(seen) and "started" in seen  # per-agent lines, with -v
    assert "Ctrl-C stops it" not in seen


def test_a_sigterm_still_exits_0(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 3, seed=3, settings=FAST_SETTINGS)
    child = spawn(root, "life-cycle")
    child.expect(r"pass \d+")
    child.kill(signal.SIGTERM)
    seen = finish(child)
    assert child.exitstatus == 0, seen
    assert "Traceback" not in seen


def test_init_ends_its_bar_and_says_one_line(tmp_path: Path) -> None:
    child = spawn(tmp_path / "ws", "init", "60", "--seed", "1")
    seen = finish(child)
    assert child.exitstatus == 0, seen
    lines = [line for line in seen.replace("\r", "\n").splitlines() if line.strip()]
    summary = [line for line in lines if line.startswith("created 60 agents")]
    assert len(summary) == 1, seen
    assert not EVENT_LINE.search(seen), seen  # no line per agent created
    assert seen.rstrip().endswith("\n" + summary[0].rstrip()) or lines[-1] == summary[0]


def test_status_watch_refreshes_in_place_until_ctrl_c(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 2, seed=3)
    child = spawn(root, "status", "--watch", "0.3")
    child.expect("life cycle +not running")
    child.expect("life cycle +not running")  # a second frame
    child.sendintr()
    seen = finish(child)
    assert child.exitstatus == 0 and "Traceback" not in seen


def test_under_cron_a_second_life_cycle_says_nothing_and_exits_75(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 2, seed=3, settings=FAST_SETTINGS)
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: bool(read_events(root, "pass_done")), 60, "a first pass")
        quiet = run_evolve(root, "-q", "life-cycle")
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (75, "", "")
        loud = run_evolve(root, "life-cycle")  # without -q: one line says why
        assert loud.returncode == 75
        assert len(loud.stderr.strip().splitlines()) == 1 and "in use" in loud.stderr
    finally:
        stop_life_cycle(proc)
    broken = run_evolve(tmp_path / "nowhere", "-q", "life-cycle")  # real errors still print
    assert broken.returncode == 1 and "no evolve workspace" in broken.stderr
