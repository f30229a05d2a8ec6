"""Stage 4 of a pass: who runs. Restarts of changed agents, turns above
``lifecycle.max_running``, and launches of the agents that waited longest."""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import sys
import zlib
from pathlib import Path

from evolve_ai import _linux
from evolve_ai.operations.population import LiveAgent, Population
from evolve_ai.services.config import Config
from evolve_ai.services.launcher import LaunchSpec, Rlimits
from evolve_ai.services.supervisor import Supervisor
from evolve_ai.services.workspace import Workspace

LOG_CAP = 1 << 20  # bytes of an agent's log kept before it is rotated at the next start


def launch_spec(workspace: Workspace, config: Config, agent_id: str,
                directory: Path | None = None) -> LaunchSpec:
    """How an agent is started: its directory, scrubbed environment, limits and sandbox.
    ``directory``: another than the agent's own (a trial's), started the same way."""
    directory = directory or workspace.agent_dir(agent_id)
    limits = config.limits
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(directory),
        "PYTHONPATH": "src",
        "PYTHONDONTWRITEBYTECODE": "1",
        "EVOLVE_AGENT_ID": agent_id,
        "EVOLVE_COMMONS": str(workspace.commons_dir),
    }
    return LaunchSpec(
        agent_id=agent_id,
        cwd=str(directory),
        env=env,
        limits=Rlimits(
            memory_bytes=limits.memory_mb * 1024 * 1024,
            cpu_seconds=limits.cpu_seconds,
            open_files=limits.open_files,
            file_size_bytes=limits.file_size_mb * 1024 * 1024,
            processes=limits.processes,
        ),
        writable=(str(directory),),
        readonly_within=(str(directory / "src"), str(directory / "pyproject.toml")),
        pycache_prefix=str(workspace.pycache_dir),
        uid=None if uid_status(workspace, config) else agent_uid(config, agent_id),
        memory_bytes=limits.memory_mb << 20,
    )


def agent_uid(config: Config, agent_id: str) -> int:
    """The unprivileged uid an agent runs as, drawn from ``sandbox.uid_base``'s range."""
    return config.sandbox.uid_base + zlib.crc32(agent_id.encode()) % config.sandbox.uids


def uid_status(workspace: Workspace, config: Config) -> str:
    """Why agents run as evolve's own uid, or "" when each gets an uid of its own."""
    if config.sandbox.uid_base == 0:
        return "sandbox.uid_base is 0"
    if os.geteuid() != 0:
        return "evolve does not run as root"
    if not _can_switch_uids():
        return "evolve runs as root without CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID, CAP_CHOWN"
    return _closed_path(workspace.root)


@functools.cache
def _can_switch_uids() -> bool:
    """Without CAP_SYS_ADMIN the fork server sandboxes from a user namespace of its own,
    where only its own uid exists."""
    return _linux.capable(_linux.CAP_SYS_ADMIN, _linux.CAP_SETUID, _linux.CAP_SETGID,
                          _linux.CAP_CHOWN)


@functools.cache
def _closed_path(root: Path) -> str:
    """An agent under another uid must reach its directory, the pycache and the commons,
    and the interpreter's own modules: every directory on the way must let others
    through (a ``mktemp -d`` does not, nor a Python installed under /root)."""
    workspace = (root, root / "agents", root / "workspace", root / "workspace" / "pycache",
                 root / "workspace" / "commons")
    interpreter = {Path(p) for p in (sys.base_prefix, sys.prefix, *sys.path) if p}
    for place in (*workspace, *sorted(interpreter)):
        for directory in (*reversed(place.parents), place):
            try:
                if not os.stat(directory).st_mode & stat.S_IXOTH:
                    return f"{directory} is closed to other users (chmod o+x to open it)"
            except OSError:
                continue  # not there: nothing to reach
    return ""


class Scheduler:
    def __init__(self, workspace: Workspace, config: Config, population: Population,
                 supervisor: Supervisor) -> None:
        self.workspace = workspace
        self.config = config
        self.population = population
        self.supervisor = supervisor
        self._turns: dict[str, int] = {}  # passes run in the current turn
        self._last_ran: dict[str, float] = {}  # when each agent was last started

    def schedule(self, now: float) -> None:
        """Stop agents whose code changed, rotate turns, launch who waited longest."""
        sup = self.supervisor
        for agent in self.population.agents.values():
            if agent.needs_restart and sup.has_process(agent.id):
                sup.stop(agent.id, "restart", now)
            elif agent.needs_restart:
                agent.needs_restart = False
        active = self.population.active()
        limit = self.config.lifecycle.max_running
        if len(active) > limit:
            self._rotate_turns(limit, now)
        alive = len(sup.alive())
        waiting = [a for a in active if sup.ready_to_restart(a.id, now)]
        # Longest waiting first; among those that never ran, the newest first (agents
        # are in birth order, and the sort is stable): births carry the genomes
        # selection chose, and behind 10,000 founders taking turns they would wait a
        # hundred passes before anyone measured them.
        waiting.reverse()
        waiting.sort(key=lambda a: self._last_ran.get(a.id, 0.0))
        for agent in waiting:
            if alive >= limit:
                break
            if self._launch(agent, now):
                alive += 1

    def forget(self, agent_id: str) -> None:
        """A buried agent takes no more turns."""
        self._turns.pop(agent_id, None)
        self._last_ran.pop(agent_id, None)

    def _rotate_turns(self, limit: int, now: float) -> None:
        """Round robin above ``max_running``: agents whose turn is over make room.

        At most a ``1/turn_passes`` share of the places turns over in one pass, the
        longest-running first: agents started together would otherwise all stop in
        the same pass, leaving a pass with nobody running and a launch burst after it.
        """
        turn_passes = self.config.lifecycle.turn_passes
        running = self.supervisor.running()
        for agent_id in running:
            self._turns[agent_id] = self._turns.get(agent_id, 0) + 1
        # turns counts this pass too, whose tasks it will not get: ">" leaves it
        # turn_passes passes of tasks (with turn_passes 1, ">=" left it none).
        due = sorted((agent_id for agent_id in running if self._turns[agent_id] > turn_passes),
                     key=lambda agent_id: -self._turns[agent_id])
        for agent_id in due[:-(-limit // turn_passes)]:
            self.supervisor.stop(agent_id, "turn", now)

    def _launch(self, agent: LiveAgent, now: float) -> bool:
        log_path = self.workspace.agent_logs_dir / f"{agent.id}.log"
        _rotate(log_path)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            started = self.supervisor.start(launch_spec(self.workspace, self.config, agent.id),
                                            fd, now)
        finally:
            os.close(fd)
        agent.needs_restart = False
        agent.pending.clear()
        if started:
            self._turns[agent.id], self._last_ran[agent.id] = 0, now
        return started


def _rotate(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_CAP:
            path.replace(path.with_suffix(".log.1"))
