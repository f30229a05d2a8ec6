"""The workspace on disk (docs/design.md, "Data on disk"): paths, layout, lock, debris cleanup."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from evolve_ai.errors import LockHeld, WorkspaceError

# Commands that hold the lock only for a moment; a long holder is refused at once.
# "" is a holder that has the lock but has not written its role yet: wait and see.
BRIEF_HOLDERS = frozenset({"status", "show", "maintenance", ""})
BRIEF_WAIT = 3.0
UNLISTED = ".unlisted"  # suffix of an agent directory the store did not list, kept in trash/


class Workspace:
    """One workspace directory. A plain class rather than a dataclass: ``evolve status``
    imports this module, and dataclasses (with inspect) would cost it ~7 ms of its 50."""

    __slots__ = ("root",)
    root: Path

    def __init__(self, root: Path) -> None:
        object.__setattr__(self, "root", root)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Workspace is immutable: cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workspace) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Workspace(root={self.root!r})"

    def __reduce__(self) -> tuple[type[Workspace], tuple[Path]]:
        return Workspace, (self.root,)

    @property
    def config_path(self) -> Path:
        return self.root / "evolve.toml"

    @property
    def template_dir(self) -> Path:
        return self.root / "agent_template"

    @property
    def agents_dir(self) -> Path:
        return self.root / "agents"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def agent_logs_dir(self) -> Path:
        return self.logs_dir / "agents"

    @property
    def init_log(self) -> Path:
        return self.logs_dir / "initialization_log.txt"

    @property
    def events_log(self) -> Path:
        return self.logs_dir / "evolve.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.root / "workspace"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "evolve.db"

    @property
    def commons_dir(self) -> Path:
        return self.state_dir / "commons"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "evolve.lock"

    @property
    def init_lock_path(self) -> Path:
        return self.state_dir / "init.lock"

    @property
    def staging_dir(self) -> Path:
        """Where agents are built before they are moved, complete, into ``agents/``."""
        return self.state_dir / "staging"

    @property
    def pycache_dir(self) -> Path:
        """Compiled modules of every agent (``sys.pycache_prefix``, read-only for agents)."""
        return self.state_dir / "pycache"

    @property
    def versions_dir(self) -> Path:
        """Every template version, kept as it was: ``templates/<fingerprint>/``."""
        return self.state_dir / "templates"

    @property
    def trash_dir(self) -> Path:
        """Dead agents' directories wait here to be deleted off the loop's path."""
        return self.state_dir / "trash"

    def agent_dir(self, agent_id: str) -> Path:
        return self.agents_dir / agent_id

    def has_agents(self) -> bool:
        """Whether ``agents/`` holds any agent directory."""
        return self.agents_dir.is_dir() and any(
            _is_agent_id(entry.name) for entry in self.agents_dir.iterdir())

    def is_initialized(self) -> bool:
        return self.db_path.is_file()

    def ensure_layout(self) -> None:
        try:
            for directory in (self.agents_dir, self.agent_logs_dir, self.commons_dir,
                              self.staging_dir, self.versions_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"cannot create the workspace in {self.root}: {exc}") from None

    @contextlib.contextmanager
    def lock(self, role: str) -> Iterator[None]:
        """Hold ``workspace/evolve.lock`` (flock: released by the kernel even on kill -9).

        A holder doing brief work (``status`` cleaning debris) is waited for a
        moment; a long one (``life-cycle``, ``init``) is refused at once: LockHeld.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + BRIEF_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _read_holder(fd)
                    # A holder the file does not name (a probe by status or the dashboard,
                    # an instant; the file still names a process gone) is waited for too.
                    brief = holder[0] in BRIEF_HOLDERS or not pid_alive(holder[1])
                    if not brief or time.monotonic() > deadline:
                        who = f"{holder[0]} (pid {holder[1]})" if holder[1] else "another evolve"
                        raise LockHeld(
                            f"workspace {self.root} is in use by {who}; "
                            f"lock: {self.lock_path}"
                        ) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{role} {os.getpid()} {time.time()!r}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock_for_init(self) -> Iterator[int | None]:
        """What ``init`` holds: ``init.lock`` (one init at a time: the next one waits),
        then ``evolve.lock`` as ``lock`` takes it, unless a life cycle holds that one:
        ``init`` then adds agents beside it (yields its pid, else None), leaving debris
        and everything but its own agents alone."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.init_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for the init before this one
            held = contextlib.ExitStack()
            beside: int | None = None
            try:
                held.enter_context(self.lock("init"))
            except LockHeld:
                role, beside = self.holder()
                if role != "life-cycle":
                    raise
            with held:
                yield beside
        finally:
            os.close(fd)

    def held_by(self, pid: int) -> bool:
        """Whether ``evolve.lock`` is held now and says ``pid`` holds it (so that a signal
        for its holder reaches no other process that took its pid since)."""
        holder = _taken(self.lock_path)
        return holder is not None and holder[1] == pid

    def life_cycle(self) -> tuple[int, float | None] | None:
        """The pid of the life cycle holding the workspace now, and since when (None: no
        life cycle runs; the lock is the truth, not what the store last recorded)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                fields = os.pread(fd, 200, 0).decode(errors="replace").split()
                if fields[:1] != ["life-cycle"] or len(fields) < 2 or not fields[1].isdigit():
                    return None
                try:
                    since: float | None = float(fields[2])
                except (IndexError, ValueError):
                    since = None
                return int(fields[1]), since
            return None
        finally:
            os.close(fd)

    def holder(self) -> tuple[str, int]:
        """The role and pid written by the holder of ``evolve.lock`` ("", 0: none said)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return "", 0
        try:
            return _read_holder(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def try_lock(self, role: str) -> Iterator[bool]:
        """Like ``lock`` but yields False instead of waiting or failing."""
        if not self.state_dir.is_dir():
            yield False
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{role} {os.getpid()}\n".encode(), 0)
            yield True
        finally:
            os.close(fd)

    def init_at_work(self) -> bool:
        """Whether an ``init`` holds ``init.lock`` (working beside a life cycle, maybe)."""
        return _taken(self.init_lock_path) is not None

    def clean_debris(self, store: Vouching, *, by_init: bool = False) -> Cleanup:
        """Tidy what an interrupted command left, deleting only what the store vouches for.

        Call only under the lock; ``by_init``: from the init that holds ``init.lock``
        (while another holds it, nothing is cleaned). Staging areas (agents half-built,
        never listed) are
        deleted; in ``trash/``, the remains of dead agents; an agent directory the store
        does not list is moved to ``trash/`` and kept, never deleted. Only entries named
        like agent ids are touched in ``agents/``. A store that knows no agent at all
        beside an ``agents/`` that holds some is refused: it is not this population's.
        """
        if not by_init and self.init_at_work():
            # Its agents are in agents/ a moment before they are listed: not debris.
            return Cleanup()
        unlisted = []
        if self.agents_dir.is_dir():
            living = store.living_ids()
            unlisted = [entry for entry in self.agents_dir.iterdir()
                        if entry.name not in living and _is_agent_id(entry.name)]
        if unlisted and store.agents_ever() == 0:
            raise WorkspaceError(
                f"{self.agents_dir} holds {len(unlisted)} agent directories but the store "
                f"{self.db_path} knows no agent: it is not this population's store. Nothing "
                "was changed; restore the store from a backup, or move agents/ away")
        cleanup = Cleanup()
        if self.staging_dir.is_dir():
            for entry in self.staging_dir.iterdir():
                if _in_use(entry.name):
                    continue  # an init at work beside a life cycle: its agents, not debris
                _remove(entry)
                cleanup.removed += 1
        if self.trash_dir.is_dir():
            for entry in self.trash_dir.iterdir():
                if not entry.name.endswith(UNLISTED) and store.is_dead(entry.name[:36]):
                    _remove(entry)
                    cleanup.removed += 1
        for entry in unlisted:
            self.trash_dir.mkdir(parents=True, exist_ok=True)
            entry.rename(self.trash_dir / f"{entry.name}-{time.time_ns()}{UNLISTED}")
            cleanup.kept.append(entry.name)
        return cleanup


class Vouching(Protocol):
    """What the store says about agents, for ``clean_debris``."""

    def living_ids(self) -> set[str]: ...

    def agents_ever(self) -> int: ...

    def is_dead(self, agent_id: str) -> bool: ...


class Cleanup:
    """What ``clean_debris`` did: entries deleted, unlisted agents moved to the trash."""

    __slots__ = ("kept", "removed")

    def __init__(self) -> None:
        self.removed = 0
        self.kept: list[str] = []


def _read_holder(fd: int) -> tuple[str, int]:
    try:
        role, pid = os.pread(fd, 200, 0).decode().split()[:2]
        return role, int(pid)
    except (ValueError, UnicodeDecodeError):
        return "", 0


def _taken(lock: Path) -> tuple[str, int] | None:
    """The holder a lock file names, if some process holds the lock now; else None."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    else:
        return None  # nobody holds it
    finally:
        os.close(fd)


def pid_alive(pid: str | int) -> bool:
    """Whether a process of that pid exists (one of another user's included)."""
    if not str(pid).isdigit() or int(pid) == 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use(staging: str) -> bool:
    """Whether the process a staging area is named after (``<label>-<pid>-<hex>``, see
    ``making``) still runs, other than this one."""
    parts = staging.split("-")
    return (len(parts) == 3 and parts[1] != str(os.getpid()) and pid_alive(parts[1]))


def _is_agent_id(name: str) -> bool:
    try:
        import uuid  # only when cleaning: quick commands skip its import

        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil  # only when cleaning: quick commands skip its import

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def resolve_root(root: str | None) -> Workspace:
    """The workspace named by --root, else $EVOLVE_ROOT, else the current directory."""
    chosen = root or os.environ.get("EVOLVE_ROOT") or os.getcwd()
    path = Path(chosen).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise WorkspaceError(f"--root {path} is not a directory")
    return Workspace(path)
