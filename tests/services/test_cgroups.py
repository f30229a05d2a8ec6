"""Finding our own pids cgroup, from mountinfo and /proc/self/cgroup as the kernel writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve_ai._cgroups import own_pids_cgroup

V1_MOUNTS = (
    "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
    "38 30 0:34 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n"
    "39 30 0:35 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
)


def _proc(tmp_path: Path, mountinfo: str, cgroup: str) -> tuple[str, str]:
    (tmp_path / "mountinfo").write_text(mountinfo)
    (tmp_path / "cgroup").write_text(cgroup)
    return str(tmp_path / "mountinfo"), str(tmp_path / "cgroup")


def test_v1_pids_hierarchy(tmp_path: Path) -> None:
    files = _proc(tmp_path, V1_MOUNTS, "9:pids:/system.slice/evolve.service\n"
                                       "4:cpu,cpuacct:/x\n0::/\n")
    assert own_pids_cgroup(*files) == "/sys/fs/cgroup/pids/system.slice/evolve.service"


def test_v1_in_a_container_strips_the_mount_root(tmp_path: Path) -> None:
    mounts = "38 30 0:34 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    files = _proc(tmp_path, mounts, "9:pids:/docker/abc/inner\n")
    assert own_pids_cgroup(*files) == "/sys/fs/cgroup/pids/inner"


def test_v2_needs_the_controller_delegated(tmp_path: Path) -> None:
    group = tmp_path / "fs" / "user.slice"
    group.mkdir(parents=True)
    (group / "cgroup.subtree_control").write_text("cpu memory\n")
    mounts = f"31 25 0:27 / {tmp_path / 'fs'} rw - cgroup2 cgroup2 rw\n"
    files = _proc(tmp_path, mounts, "0::/user.slice\n")
    with pytest.raises(OSError, match="not delegated"):
        own_pids_cgroup(*files)
    (group / "cgroup.subtree_control").write_text("cpu memory pids\n")
    assert own_pids_cgroup(*files) == str(group)


def test_no_hierarchy(tmp_path: Path) -> None:
    files = _proc(tmp_path, "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n", "0::/\n")
    with pytest.raises(OSError, match="no pids cgroup"):
        own_pids_cgroup(*files)
