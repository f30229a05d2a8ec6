"""The launcher's tests once more, from a fork server without root's powers: the path
of an unprivileged orchestrator (the shipped systemd unit), which sandboxes its agents
from a user namespace of its own and gives each a pid namespace through a helper."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import WITHOUT_ROOT_POWERS, user_namespaces_allowed

LAUNCHER_TESTS = Path(__file__).with_name("test_forkserver_launcher.py")
# The tests that must run (not skip) there: the sandbox's promises.
MUST_PASS = (
    "test_sandbox_allows_only_the_agent_directory_and_no_network",
    "test_an_agent_is_alone_in_its_pid_namespace",
    "test_an_agent_cannot_make_a_user_namespace",
    "test_what_an_agent_leaves_behind_dies_with_it",
    "test_killpg_reaches_the_agents_own_children",
    "test_agents_and_fork_server_die_with_the_orchestrator",
    "test_a_dead_fork_server_is_replaced_and_its_agents_reported_killed",
    "test_two_hundred_agents_say_hello",
)


def test_the_launcher_keeps_its_promises_without_root_powers() -> None:
    if os.geteuid() != 0:
        pytest.skip("not root: the launcher tests themselves ran without root's powers")
    if not user_namespaces_allowed():
        pytest.skip("this kernel gives unprivileged users no user namespace")
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed"
    result = subprocess.run(
        [*WITHOUT_ROOT_POWERS, sys.executable, "-m", "pytest", "-q", "-rA",
         "-p", "no:cacheprovider", str(LAUNCHER_TESTS)],
        capture_output=True, text=True, timeout=600, check=False,
        cwd=LAUNCHER_TESTS.parents[2])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for name in MUST_PASS:
        assert f"PASSED tests/services/test_forkserver_launcher.py::{name}" in result.stdout, \
            result.stdout[-4000:]
