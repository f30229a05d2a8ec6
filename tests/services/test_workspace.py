from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evolve_ai.errors import LockHeld
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


def test_clean_debris_removes_staging_and_unlisted_agents_only(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.ensure_layout()
    (workspace.staging_dir / "init-1-abc" / AGENT).mkdir(parents=True)
    listed = workspace.agent_dir("aaaaaaaa-1234-4234-8234-123456789abc")
    orphan = workspace.agent_dir(AGENT)
    stray = workspace.agents_dir / "notes.txt"
    for directory in (listed, orphan):
        directory.mkdir()
        (directory / "genome.bin").write_bytes(b"\x80")
    stray.write_text("mine")
    assert workspace.clean_debris({listed.name}) == 2
    assert listed.exists()
    assert stray.exists()
    assert not orphan.exists()
    assert list(workspace.staging_dir.iterdir()) == []


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
