"""Genes on trial: run in an agent-like process, with the agents' sandbox and limits.

A trial directory holds ``src/agent/main.py`` (``_trial_runner.py``, ours) and the
modules on trial; it is launched through a fork server of its own exactly as an agent
is (``launch_spec``), given its request on stdin, and heard until its answer, its exit
or its deadline, whichever comes first; then its whole process group is killed and the
directory removed. Whatever the code does (loop, allocate, fork, print, crash) costs
at most the deadline and the agents' limits, and yields answers or a reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve_ai.operations.scheduler import launch_spec
from evolve_ai.services.config import Config
from evolve_ai.services.files import atomic_write
from evolve_ai.services.forkserver_launcher import ForkServerLauncher
from evolve_ai.services.launcher import LaunchError
from evolve_ai.services.workspace import Workspace

MAX_OUTPUT = 8 << 20  # bytes of answers read at most
RUNNER = Path(__file__).resolve().parent.parent / "_trial_runner.py"


class TrialFailed(Exception):
    """The trial gave no answers; the message says why (timeout, crash, garbage)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    answers: dict[str, list[Any]]  # gene -> one value (or None) per task
    errors: Mapping[str, str]  # gene -> why it answered nothing
    seconds: float


class Trials:
    """A fork server of its own for trials: started on first use, from the thread that
    runs the trials (its PR_SET_PDEATHSIG is that thread's)."""

    def __init__(self, workspace: Workspace, config: Config) -> None:
        self.workspace = workspace
        self.config = config
        self._launcher: ForkServerLauncher | None = None
        self._count = 0

    @property
    def directory(self) -> Path:
        return self.workspace.state_dir / "trials"

    def close(self) -> None:
        if self._launcher is not None:
            self._launcher.close()
            self._launcher = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def run(self, modules: Mapping[str, bytes], genes: Sequence[str],
            tasks: Sequence[Any], seconds: float) -> Outcome:
        """Answers of each gene (``agent.<module>:<function>``) on each task's data.
        ``modules``: path under ``src/agent/`` -> content. TrialFailed if none came."""
        self._count += 1
        trial_id = f"trial-{os.getpid()}-{self._count}"
        root = self.directory / trial_id
        shutil.rmtree(root, ignore_errors=True)
        package = root / "src" / "agent"
        package.mkdir(parents=True)
        try:
            for path, content in modules.items():
                target = package / path
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(target, content)
            atomic_write(package / "__init__.py", b"")
            atomic_write(package / "main.py", RUNNER.read_bytes())
            request = json.dumps({"genes": list(genes), "tasks": list(tasks)}).encode() + b"\n"
            return self._hear(root, trial_id, request, seconds)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _launcher_started(self) -> ForkServerLauncher:
        if self._launcher is None:
            launcher = ForkServerLauncher()
            try:
                launcher.start()
            except LaunchError as error:
                raise TrialFailed(f"no sandbox for the trial: {error}") from None
            self._launcher = launcher
        return self._launcher

    def _hear(self, root: Path, trial_id: str, request: bytes, seconds: float) -> Outcome:
        launcher = self._launcher_started()
        spec = launch_spec(self.workspace, self.config, trial_id, directory=root)
        log = self.workspace.logs_dir / "trial.log"  # the last trial's stderr only
        stderr = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        started = time.monotonic()
        try:
            launched = launcher.spawn(spec, stderr)
        except LaunchError as error:
            raise TrialFailed(f"the trial could not start: {error}") from None
        finally:
            os.close(stderr)
        deadline = started + seconds
        output = bytearray()
        try:
            _write_all(launched.stdin, request, deadline)
            os.close(launched.stdin)
            while len(output) <= MAX_OUTPUT:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TrialFailed(f"no answer within {seconds:g} s")
                ready, _, _ = select.select([launched.stdout], [], [], left)
                if not ready:
                    continue
                chunk = os.read(launched.stdout, 1 << 16)
                if not chunk:
                    break
                output += chunk
            else:
                raise TrialFailed(f"over {MAX_OUTPUT} bytes of output")
        except OSError as error:  # it closed its stdin early: it died
            raise TrialFailed(f"the trial died: {error}") from None
        finally:
            with contextlib.suppress(OSError):
                os.close(launched.stdin)
            os.close(launched.stdout)
            launcher.signal_group(launched.pid, signal.SIGKILL)  # forks included
            _reap(launcher, launched.pid)
        return _parse(bytes(output), time.monotonic() - started)


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TrialFailed("the trial did not read its request")
        _, ready, _ = select.select([], [fd], [], left)
        if ready:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue


def _reap(launcher: ForkServerLauncher, pid: int, seconds: float = 2.0) -> None:
    """Wait for the killed trial's exit report (the fork server reaps it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(exit.pid == pid for exit in launcher.read_exits()):
            return
        select.select([launcher.fileno()], [], [], max(0.0, deadline - time.monotonic()))


def _parse(output: bytes, seconds: float) -> Outcome:
    """The runner's last line; anything else it (or the code on trial) printed is
    ignored, and a last line that is not the runner's is a failure."""
    lines = [line for line in output.split(b"\n") if line.strip()]
    if not lines:
        raise TrialFailed("the trial said nothing (it crashed or was killed; "
                          "see logs/trial.log)")
    try:
        said = json.loads(lines[-1])
        answers = {str(gene): list(row) for gene, row in said["answers"].items()}
        errors = {str(gene): str(why) for gene, why in said.get("errors", {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise TrialFailed("the trial's answer is malformed") from None
    return Outcome(answers, errors, seconds)
