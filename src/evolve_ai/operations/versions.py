"""Stage 1 of a pass: the template's versions.

Each content ``agent_template/`` has is a version, kept under
``workspace/templates/<fingerprint>/`` and recorded in the store. A usable change
becomes the newest version (births use it); a broken one is refused with one error
and the version in force stays. Agents that run no process move to the newest version
at once, running ones at their next restart: their ``src/`` and ``pyproject.toml``
become the new version's, their genome and their own files stay.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from evolve_ai.core.catalogue import WIRING_PATHS, Catalogue, version_diff
from evolve_ai.errors import TemplateError
from evolve_ai.operations.making import Template
from evolve_ai.operations.population import LiveAgent, Population
from evolve_ai.services import logs
from evolve_ai.services import template as template_service
from evolve_ai.services.files import atomic_write, sync_filesystem
from evolve_ai.services.store import Store
from evolve_ai.services.supervisor import Supervisor
from evolve_ai.services.workspace import Workspace
from evolve_ai.workers.build import PYPROJECT, agent_pyproject, named_pyproject, prepare

# What the life cycle does with an agent whose tree cannot be migrated: (agent, reason).
Quarantine = Callable[[LiveAgent, str], None]


class Versions:
    def __init__(self, workspace: Workspace, population: Population, supervisor: Supervisor,
                 quarantine: Quarantine) -> None:
        self.workspace = workspace
        self.population = population
        self.supervisor = supervisor
        self.quarantine = quarantine
        self.log = logs.get_logger(command="life-cycle")
        self._refused: str | None = None  # the last template refused, said once

    def refresh(self, store: Store) -> None:
        """Make ``agent_template/`` the newest version when its content changed.

        A template that cannot be used is refused with one logged error, and the
        version in force stays (at a start, the newest one kept): never the
        population's fault. Then agents that run no process move to the newest version.
        """
        try:
            files, catalogue = template_service.load(self.workspace.template_dir)
            prepare(files, catalogue)  # refuses a bad pyproject.toml now, not at a birth
        except TemplateError as error:
            if str(error) != self._refused:
                self._refused = str(error)
                self.population.event("template_refused", None, reason=str(error),
                                      level="error")
            if self.population.template is None:
                self._resume_newest(store, error)
            return
        self._refused = None
        current = self.population.template
        if current is None or catalogue.fingerprint != current.catalogue.fingerprint:
            self._adopt(store, files, catalogue)
        self._migrate_idle()

    def _resume_newest(self, store: Store, error: TemplateError) -> None:
        """The template is broken at a start: run the newest version kept, if any."""
        for version in reversed(store.templates()):
            try:
                files, catalogue = template_service.load_version(
                    self.workspace.versions_dir, version.fingerprint)
            except TemplateError:
                continue
            self._adopt(store, files, catalogue)
            return
        raise error  # nothing to run

    def _adopt(self, store: Store, files: dict[str, bytes], catalogue: Catalogue) -> None:
        """Keep the version, record it, make it the newest; older ones stay for the agents
        that run them until they migrate."""
        template_service.keep_version(files, catalogue, self.workspace.versions_dir)
        store.add_template(catalogue.fingerprint, catalogue.genes(),
                           template_service.digests(files))
        previous = self.population.template
        known = store.known_genes()
        versions = {fp: Template(t.files, t.catalogue.retiring(known))
                    for fp, t in self.population.versions.items()}
        newest = Template(files, catalogue.retiring(known))
        versions[catalogue.fingerprint] = newest
        self.population.versions = versions
        self.population.template = newest
        for agent in self.population.agents.values():
            if agent.template is None:  # listed before versions were kept
                agent.template, agent.dirty = catalogue.fingerprint, True
            if agent.template not in versions:
                self._load_version(store, agent.template)
        template_service.publish_catalogue(catalogue, self.workspace.commons_dir)
        if previous is not None:
            change = version_diff(previous.files, files, previous.catalogue.genes(),
                                  catalogue.genes())
            self.population.event("template_changed", None, fingerprint=catalogue.fingerprint,
                                  previous=previous.catalogue.fingerprint, **change)

    def _load_version(self, store: Store, fingerprint: str | None) -> None:
        """An older version some agent runs (after a restart of the life cycle)."""
        if fingerprint is None or self.population.template is None:
            return
        try:
            files, catalogue = template_service.load_version(self.workspace.versions_dir,
                                                             fingerprint)
        except TemplateError:
            return  # lost: its agents migrate to the newest at once (see _migrate_idle)
        retired = self.population.template.catalogue.retired
        known = {path: set(functions) for path, functions in retired}
        for path, functions in self.population.template.catalogue.genes().items():
            known.setdefault(path, set()).update(functions)
        self.population.versions[fingerprint] = Template(files, catalogue.retiring(known))

    def _migrate_idle(self) -> None:
        """Agents on an older version that run no process now take the newest one.

        Files are written without a flush each, under one barrier before the pass is
        saved. A crash before the store records their new version leaves them on the
        old one in the store: at the next start they run no process, so they are
        migrated again, and ``migrate`` makes their tree the new version's whatever
        state it was left in.
        """
        newest = self.population.template
        assert newest is not None
        fingerprint = newest.catalogue.fingerprint
        moving = [a for a in self.population.active() if a.template != fingerprint
                  and not self.supervisor.has_process(a.id)]
        if not moving:
            return
        started = time.monotonic()
        pyproject = newest.files.get(PYPROJECT)
        named = None if pyproject is None else named_pyproject(pyproject)  # parsed once
        for agent in moving:
            old = self.population.versions.get(agent.template or "")
            self._migrate(agent, None if old is None else old.files, named)
        sync_filesystem(self.workspace.agents_dir)
        self.log.info("migration_done", agents=len(moving), template=fingerprint,
                      seconds=round(time.monotonic() - started, 4))

    def _migrate(self, agent: LiveAgent, old: Mapping[str, bytes] | None,
                 named: str | None) -> None:
        """Move one agent to the newest version (``old``: its version's files, if known)."""
        newest = self.population.template
        assert newest is not None
        fingerprint = newest.catalogue.fingerprint
        directory = self.workspace.agent_dir(agent.id)
        try:
            migrate(directory, old, newest.files, agent.id, named)
        except OSError as error:
            self.quarantine(agent, f"tampered: cannot migrate to template {fingerprint}: {error}")
            return
        self.population.event("migrated", agent.id, previous=agent.template,
                              template=fingerprint)
        agent.template, agent.stats, agent.dirty = fingerprint, None, True


def _sources(directory: Path) -> set[str]:
    """The files under an agent's ``src/`` but its wiring (links are not followed)."""
    found = set()
    for current, _, names in os.walk(directory / "src"):
        for name in names:
            path = Path(current, name).relative_to(directory).as_posix()
            if path not in WIRING_PATHS:
                found.add(path)
    return found


def migrate(directory: Path, old: Mapping[str, bytes] | None, new: Mapping[str, bytes],
            agent_id: str, named: str | None = None) -> None:
    """Make an agent's copy of the template exactly ``new``'s: what else its ``src/``
    holds (files of ``old``, its version; what a crash left) removed, files that differ
    from ``old`` (all of them, if ``old`` is unknown) written, without a flush: the
    caller syncs. Its genome, wiring and own files stay. ``named``: ``new``'s
    pyproject.toml through ``named_pyproject``, for a caller migrating many agents.

    Nothing is followed through a link: a path whose directories are not plain
    directories of the agent's raises OSError (the agent tampered with its tree).
    """
    for path in sorted(_sources(directory) - set(new)):
        _checked(directory, path).unlink(missing_ok=True)
    known = old or {}
    for path, content in new.items():
        if old is not None and known.get(path) == content:
            continue
        data = content
        if path == PYPROJECT:
            data = agent_pyproject(named if named is not None else named_pyproject(content),
                                   agent_id)
        atomic_write(_checked(directory, path, create=True), data, durable=False)


def _checked(directory: Path, path: str, create: bool = False) -> Path:
    current = directory
    for part in path.split("/")[:-1]:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            if not create:
                return current / "missing"
            os.mkdir(current)
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise OSError(errno.ENOTDIR, f"{current} is not a plain directory")
    return directory / path
