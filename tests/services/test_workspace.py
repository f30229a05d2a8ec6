from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evolve_ai.errors import LockHeld, WorkspaceError
from evolve_ai.services.workspace import Workspace, resolve_root
from tests.helpers import hold_lock

AGENT = "12345678-1234-4234-8234-123456789abc"


def test_lock_held_by_a_long_command_is_refused_at_once(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.ensure_layout()
    holder = hold_lock(workspace, "life-cycle")
    try:
        started = time.monotonic()
        with pytest.raises(LockHeld) as info, workspace.lock("init"):
            pass
        assert time.monotonic() - started < 1.0
        assert info.value.exit_code == 75
        assert f"life-cycle (pid {holder.pid})" in str(info.value)
        with workspace.try_lock("status") as held:
            assert held is False
    finally:
        holder.kill()
        holder.wait()
    # the kernel drops a killed holder's lock
    with workspace.lock("init"):
        assert workspace.lock_path.read_text().startswith("init ")


class Vouch:
    """What a store would say: these ids are alive, these dead."""

    def __init__(self, living: set[str], dead: frozenset[str] = frozenset()) -> None:
        self.living, self.dead = living, dead

    def living_ids(self) -> set[str]:
        return self.living

    def agents_ever(self) -> int:
        return len(self.living) + len(self.dead)

    def is_dead(self, agent_id: str) -> bool:
        return agent_id in self.dead


DEAD = "dddddddd-1234-4234-8234-123456789abc"


def test_clean_debris_deletes_staging_and_the_dead_and_keeps_the_unlisted(
        tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.ensure_layout()
    # named after an init whose process has ended
    (workspace.staging_dir / f"init-{_pid_of_ended()}-abc" / AGENT).mkdir(parents=True)
    listed = workspace.agent_dir("aaaaaaaa-1234-4234-8234-123456789abc")
    orphan = workspace.agent_dir(AGENT)
    stray = workspace.agents_dir / "notes.txt"
    for directory in (listed, orphan):
        directory.mkdir()
        (directory / "genome.bin").write_bytes(b"\x80")
    stray.write_text("mine")
    remains = workspace.trash_dir / f"{DEAD}-123-456"  # a dead agent's, half shredded
    remains.mkdir(parents=True)
    unknown = workspace.trash_dir / f"{AGENT}-9-9"  # not vouched for as dead: kept
    unknown.mkdir()
    cleanup = workspace.clean_debris(Vouch({listed.name}, frozenset({DEAD})))
    assert (cleanup.removed, cleanup.kept) == (2, [AGENT])
    assert listed.exists() and stray.exists() and unknown.exists()
    assert not orphan.exists() and not remains.exists()
    kept = [p for p in workspace.trash_dir.iterdir() if p.name.endswith(".unlisted")]
    assert [(p / "genome.bin").read_bytes() for p in kept] == [b"\x80"]
    assert list(workspace.staging_dir.iterdir()) == []
    again = workspace.clean_debris(Vouch({listed.name}, frozenset({DEAD})))
    assert (again.removed, again.kept) == (0, [])  # what was kept stays kept
    assert kept[0].exists()


def test_an_empty_store_beside_agents_is_refused(tmp_path: Path) -> None:
    """A store that knows nobody is not this population's: nothing is touched."""
    workspace = Workspace(tmp_path)
    workspace.ensure_layout()
    agent = workspace.agent_dir(AGENT)
    agent.mkdir()
    (workspace.staging_dir / "init-1-abc").mkdir()
    with pytest.raises(WorkspaceError, match="knows no agent"):
        workspace.clean_debris(Vouch(set()))
    assert agent.exists() and (workspace.staging_dir / "init-1-abc").exists()


def test_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOLVE_ROOT", str(tmp_path / "from-env"))
    assert resolve_root(None).root == tmp_path / "from-env"
    assert resolve_root(str(tmp_path)).root == tmp_path
    monkeypatch.delenv("EVOLVE_ROOT")
    monkeypatch.chdir(tmp_path)
    assert resolve_root(None).root == tmp_path


def test_a_holder_that_has_not_said_who_it_is_is_waited_for(tmp_path: Path) -> None:
    """The instant between a holder's flock and its role being written is not a refusal."""
    workspace = Workspace(tmp_path)
    workspace.ensure_layout()
    code = textwrap.dedent(f"""
        import fcntl, os, time
        fd = os.open({str(workspace.lock_path)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        print("held", flush=True)
        time.sleep(0.5)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"held\n"
    started = time.monotonic()
    with workspace.lock("life-cycle"):
        assert time.monotonic() - started >= 0.2
    proc.wait(timeout=10)


def _pid_of_ended() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_staging_area_of_an_init_at_work_is_kept(tmp_path: Path) -> None:
    """An init beside a life cycle builds in staging without the workspace lock: its
    area, named after its live pid, is not debris."""
    workspace = Workspace(tmp_path)
    workspace.ensure_layout()
    working = subprocess.Popen(["sleep", "30"])
    try:
        area = workspace.staging_dir / f"init-{working.pid}-abc"
        (area / AGENT).mkdir(parents=True)
        cleanup = workspace.clean_debris(Vouch(set(), frozenset()))
        assert area.is_dir() and cleanup.removed == 0
    finally:
        working.kill()
        working.wait()
    assert workspace.clean_debris(Vouch(set(), frozenset())).removed == 1
    assert not area.exists()
