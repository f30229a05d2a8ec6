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
SETTLE = 1.0  # seconds the template must stay unchanged before it becomes a version
# Errors of a migration that show a tree the orchestrator did not make (links, files
# where directories go): the agent's doing. Any other (a full disk) is the machine's.
TAMPERING = frozenset({errno.ENOTDIR, errno.ELOOP, errno.EISDIR, errno.ENOTEMPTY})


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
        population's fault. A template changed in the last ``SETTLE`` seconds waits for
        the next pass (it may be half-saved). Then agents that run no process move to
        the newest version.
        """
        if self.population.template is not None and not template_service.settled(
                self.workspace.template_dir, SETTLE, time.time()):
            self._migrate_idle()
            return
        try:
            files, catalogue = template_service.load(self.workspace.template_dir)
            prepare(files, catalogue)  # refuses a bad pyproject.toml now, not at a birth
        except TemplateError as error:
            if str(error) != self._refused:
                self._refused = str(error)
                self.population.event("template_refused", None, reason=str(error),
                                      level="error")
                store.set_template_refused(str(error))  # for status, until it is fixed
            if self.population.template is None:
                self._resume_newest(store, error)
            return
        if self._refused is not None or self.population.template is None:
            store.set_template_refused(None)
        self._refused = None
        current = self.population.template
        if current is None or catalogue.fingerprint != current.catalogue.fingerprint:
            try:
                self._adopt(store, files, catalogue)
            except OSError as error:  # it cannot be kept (a full disk): not yet, then
                self.log.error("template_not_kept", error=str(error))
                if current is None:
                    raise
                return
        self._migrate_idle()

    def _resume_newest(self, store: Store, error: TemplateError) -> None:
        """The template is broken at a start: run the newest version kept, if any."""
        newest = store.newest_template()
        candidates = sorted(store.templates(), reverse=True,
                            key=lambda v: (v.fingerprint == newest, v.created))
        for version in candidates:
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
            # Agents listed before versions were kept (None) migrate like any other.
            if agent.template is not None and agent.template not in versions:
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
        migrated again, and ``migrate`` makes their tree the newest version's whatever
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
        moved = sum(self._migrate(agent, named) for agent in moving)
        sync_filesystem(self.workspace.agents_dir)
        self.log.info("migration_done", agents=moved, template=fingerprint,
                      seconds=round(time.monotonic() - started, 4))

    def _migrate(self, agent: LiveAgent, named: str | None) -> bool:
        """Move one agent to the newest version; whether it moved."""
        newest = self.population.template
        assert newest is not None
        fingerprint = newest.catalogue.fingerprint
        try:
            migrate(self.workspace.agent_dir(agent.id), newest.files, agent.id, named)
        except OSError as error:
            if error.errno in TAMPERING:  # its tree is not what the orchestrator made
                self.quarantine(agent, f"tampered: cannot migrate to template "
                                       f"{fingerprint}: {error}")
            else:  # the machine's fault (a full disk...): it stays, and is tried again
                self.log.error("migration_failed", agent=agent.id, template=fingerprint,
                               error=str(error))
            return False
        self.population.event("migrated", agent.id, previous=agent.template,
                              template=fingerprint)
        agent.template, agent.stats, agent.dirty = fingerprint, None, True
        return True


def _sources(directory: Path) -> set[str]:
    """The files under an agent's ``src/`` but its wiring (links are not followed)."""
    found = set()
    for current, _, names in os.walk(directory / "src"):
        for name in names:
            path = Path(current, name).relative_to(directory).as_posix()
            if path not in WIRING_PATHS:
                found.add(path)
    return found


def migrate(directory: Path, new: Mapping[str, bytes], agent_id: str,
            named: str | None = None) -> None:
    """Make an agent's copy of the template exactly ``new``: whatever else its
    ``src/`` holds (another version's files, what a crash left) removed, each file
    that differs from ``new`` on disk written, without a flush (the caller syncs).
    Its genome, wiring and own files stay. ``named``: ``new``'s pyproject.toml through
    ``named_pyproject``, for a caller migrating many agents.

    Nothing is followed through a link: a path whose directories are not plain
    directories of the agent's, or whose file is not a plain file, raises OSError
    with an errno of ``TAMPERING`` (the agent tampered with its tree).
    """
    for path in sorted(_sources(directory) - set(new)):
        _checked(directory, path).unlink(missing_ok=True)
    for path, content in new.items():
        data = content
        if path == PYPROJECT:
            data = agent_pyproject(named if named is not None else named_pyproject(content),
                                   agent_id)
        target = _checked(directory, path, create=True)
        if _holds(target, data):
            continue
        atomic_write(target, data, durable=False)


def _holds(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a plain file holding exactly ``data`` (never through a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as error:
        if error.errno == errno.ELOOP:  # a link planted where a file of ours goes
            raise OSError(errno.ELOOP, f"{path} is a link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EISDIR, f"{path} is not a plain file")
        return info.st_size == len(data) and os.read(fd, len(data) + 1) == data
    finally:
        os.close(fd)


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
