from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from evolve_ai.services.files import atomic_write, sync_filesystem


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "genome.bin"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["genome.bin"]


def test_a_writer_killed_mid_write_leaves_the_old_content(tmp_path: Path) -> None:
    """kill -9 between the temp file and the rename: readers still see the old bytes."""
    target = tmp_path / "state.bin"
    atomic_write(target, b"old")
    code = (
        "import os, sys, signal\n"
        "from pathlib import Path\n"
        "import evolve_ai.services.files as f\n"
        "real = os.replace\n"
        "def die(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.replace = die\n"
        f"f.atomic_write(Path({str(target)!r}), b'new' * 100000)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == -9
    assert target.read_bytes() == b"old"


def test_sync_filesystem_runs(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    sync_filesystem(tmp_path)
    assert os.path.exists(tmp_path / "a")


def test_atomic_write_does_not_follow_a_link_at_its_temp_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "main.py"
    os.symlink(victim, tmp_path / f".main.py.{os.getpid()}.tmp")
    import pytest

    with pytest.raises(OSError):
        atomic_write(target, b"x = 1\n")
    assert victim.read_bytes() == b"precious"
