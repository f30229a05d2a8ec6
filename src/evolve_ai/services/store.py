"""The store: SQLite (WAL) at ``workspace/evolve.db``, the global listing of agents.

One connection per process; every write is one explicit transaction, so a
crash leaves the database as of the last commit. The schema is versioned with
``PRAGMA user_version`` and migrated forward on open.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evolve_ai.core.records import (
    STATUSES,
    AgentRow,
    AgentUpdate,
    Event,
    GenerationDetail,
    GenerationRow,
    TemplateVersion,
)
from evolve_ai.errors import UnknownAgent, WorkspaceError

MIGRATIONS: tuple[str, ...] = (
    # 1: the listing, genomes by hash, events, per-generation history, small meta map
    """
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'quarantined', 'dead')),
        reason TEXT,
        generation INTEGER NOT NULL,
        parent TEXT,
        genome_hash TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        active_files INTEGER NOT NULL DEFAULT 0,
        active_functions INTEGER NOT NULL DEFAULT 0,
        fitness REAL,
        evaluations INTEGER NOT NULL DEFAULT 0,
        restarts INTEGER NOT NULL DEFAULT 0,
        process TEXT NOT NULL DEFAULT 'stopped',
        pid INTEGER,
        pid_started REAL
    );
    CREATE INDEX agents_status ON agents (status);
    CREATE INDEX agents_parent ON agents (parent);
    CREATE TABLE genomes (hash TEXT PRIMARY KEY, data BLOB NOT NULL);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        agent TEXT,
        generation INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_agent ON events (agent);
    CREATE TABLE generations (
        generation INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        mean REAL,
        max REAL,
        population INTEGER NOT NULL,
        births INTEGER NOT NULL,
        deaths INTEGER NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('generation', '0');
    """,
    # 2: structural metrics per agent (life cycle)
    """
    ALTER TABLE agents ADD COLUMN lines INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE agents ADD COLUMN complexity INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE agents ADD COLUMN mutations INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: selection state: energy reserve, generations spent unable to run
    """
    ALTER TABLE agents ADD COLUMN energy REAL NOT NULL DEFAULT 1.0;
    ALTER TABLE agents ADD COLUMN idle_generations INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the file says it is evolve's (``PRAGMA application_id``)
    f"PRAGMA application_id = {0x65766F6C}",
    # 5: old events are pruned by generation
    "CREATE INDEX events_generation ON events (generation)",
    # 6: template versions (their genes and files' digests, as JSON); each agent's
    """
    CREATE TABLE templates (
        fingerprint TEXT PRIMARY KEY,
        created REAL NOT NULL,
        genes TEXT NOT NULL,
        files TEXT NOT NULL
    );
    ALTER TABLE agents ADD COLUMN template TEXT;
    """,
    # 7: the webhooks' outbox (what is accepted is delivered, across crashes) and record
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox (endpoint, next_at);
    CREATE TABLE webhook_status (
        endpoint TEXT PRIMARY KEY,
        delivered INTEGER NOT NULL DEFAULT 0,
        dropped INTEGER NOT NULL DEFAULT 0,
        last_success REAL,
        last_error TEXT,
        last_error_at REAL
    );
    """,
    # 8: what the dashboard draws: fitness spread per generation, gene expression per
    # generation, each agent's fitness at every generation it closed in
    """
    ALTER TABLE generations ADD COLUMN min REAL;
    ALTER TABLE generations ADD COLUMN sd REAL;
    CREATE TABLE gene_share (
        generation INTEGER NOT NULL,
        gene TEXT NOT NULL,
        share REAL NOT NULL,
        PRIMARY KEY (generation, gene)
    ) WITHOUT ROWID;
    CREATE TABLE fitness_history (
        generation INTEGER NOT NULL,
        agent TEXT NOT NULL,
        fitness REAL NOT NULL,
        PRIMARY KEY (generation, agent)
    ) WITHOUT ROWID;
    CREATE INDEX fitness_history_agent ON fitness_history (agent, generation);
    """,
    # 9: agents' proposals of new genes, their verdicts and what was published
    """
    CREATE TABLE proposals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        agent TEXT NOT NULL,
        generation INTEGER NOT NULL,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        digest TEXT NOT NULL,
        received REAL NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        decided REAL,
        module TEXT,
        figures TEXT
    );
    CREATE INDEX proposals_status ON proposals (status, id);
    CREATE INDEX proposals_digest ON proposals (digest);
    """,
    # 10: the tasks each generation cost (what sample efficiency is counted in)
    """
    ALTER TABLE generations ADD COLUMN tasks INTEGER;
    """,
)
KEPT_REJECTED = 1000  # rejected proposals kept (the newest), with their source
APPLICATION_ID = 0x65766F6C  # "evol"
SCHEMA_VERSION = len(MIGRATIONS)
AGENT_COLUMNS = ", ".join(AgentRow._fields)
assert AgentUpdate._fields[0] == "id"  # the key; the rest are what an update sets
UPDATE_ASSIGNMENTS = ", ".join(f"{column} = ?" for column in AgentUpdate._fields[1:])
GENERATION_COLUMNS = ", ".join(GenerationRow._fields)


class Store:
    """The workspace database; use ``Store.open`` and close it (or use ``with``)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> Store:
        if not create and not path.exists():
            raise WorkspaceError(
                f"no evolve workspace here ({path} is missing): run 'evolve init N' first"
            )
        try:
            connection = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        except sqlite3.DatabaseError as exc:
            raise WorkspaceError(f"{path}: not a usable evolve database: {exc}") from None
        store = cls(connection, path)
        try:
            connection.row_factory = sqlite3.Row
            store._check_identity(create)  # before anything writes to the file
            connection.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed pass survives power loss, at one fsync per commit.
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            store._migrate()
        except BaseException as exc:
            connection.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise WorkspaceError(f"{path}: not a usable evolve database: {exc}") from None
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check_identity(self, create: bool) -> None:
        """Refuse a database that is not an evolve store, before anything is written.

        Only ``init`` (``create``) makes a schema, and only in an empty database: any
        other command that found an empty one would read it as a population of nobody,
        and clean the real population away as debris.
        """
        application = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if application not in (0, APPLICATION_ID) or (version == 0 and tables) or (
                version > 0 and "agents" not in tables):
            raise WorkspaceError(f"{self.path} is not an evolve store (another program's "
                                 "database?); nothing was changed")
        if version == 0 and not create:
            raise WorkspaceError(
                f"{self.path} is empty: the population's store is lost or was never made. "
                "Nothing was changed; restore it from a backup (only 'evolve init' creates "
                "a store, in a new workspace)")

    def check_integrity(self) -> None:
        """``PRAGMA quick_check``: a damaged store is refused before a long command runs."""
        try:
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            raise WorkspaceError(f"{self.path} is damaged ({problems[0]}); nothing was "
                                 "changed: restore it from a backup")

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise WorkspaceError(
                f"{self.path}: schema version {version} is newer than this evolve "
                f"({SCHEMA_VERSION}); upgrade evolve"
            )
        for index in range(version, SCHEMA_VERSION):
            with self.transaction():
                for statement in _statements(MIGRATIONS[index]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {index + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reads -------------------------------------------------------------

    def generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    def sandbox(self) -> dict[str, str] | None:
        """How the last life cycle confined its agents, as it said when it started."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'sandbox'").fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def set_sandbox(self, sandbox: dict[str, str]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES ('sandbox', ?) ON CONFLICT (key) "
                       "DO UPDATE SET value = excluded.value", (json.dumps(sandbox),))

    def nodes(self) -> dict[str, int] | None:
        """Agents per cluster node at the last pass of a life cycle on a cluster."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'nodes'").fetchone()
        return None if row is None else {str(k): int(v) for k, v in json.loads(row[0]).items()}

    def set_nodes(self, nodes: dict[str, int] | None) -> None:
        with self.transaction() as db:
            if nodes is None:
                db.execute("DELETE FROM meta WHERE key = 'nodes'")
            else:
                db.execute("INSERT INTO meta (key, value) VALUES ('nodes', ?) ON CONFLICT "
                           "(key) DO UPDATE SET value = excluded.value",
                           (json.dumps(nodes, sort_keys=True),))

    def agents_ever(self) -> int:
        """How many agents were ever created here (the dead included)."""
        return int(self._db.execute("SELECT count(*) FROM agents").fetchone()[0])

    def is_dead(self, agent_id: str) -> bool:
        """Whether the store knows this agent as dead (its remains may be deleted)."""
        row = self._db.execute("SELECT status FROM agents WHERE id = ?", (agent_id,)).fetchone()
        return row is not None and row[0] == "dead"

    def living_ids(self) -> set[str]:
        """Ids of agents whose directory should exist (every status but dead)."""
        rows = self._db.execute("SELECT id FROM agents WHERE status != 'dead'")
        return {row[0] for row in rows}

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((*STATUSES, "running"), 0)
        for status, number in self._db.execute(
            "SELECT status, count(*) FROM agents GROUP BY status"
        ):
            counts[status] = number
        counts["running"] = int(self._db.execute(
            "SELECT count(*) FROM agents WHERE process = 'running' AND status = 'active'"
        ).fetchone()[0])
        return counts

    def fitness_summary(self) -> dict[str, float | None]:
        row = self._db.execute(
            "SELECT avg(fitness), max(fitness) FROM agents "
            "WHERE status = 'active' AND fitness IS NOT NULL"
        ).fetchone()
        return {"mean": row[0], "max": row[1]}

    def history(self, last: int | None = None) -> list[GenerationRow]:
        """Every generation's row, oldest first; or the ``last`` ones."""
        rows = self._db.execute(
            f"SELECT {GENERATION_COLUMNS} FROM generations ORDER BY generation DESC LIMIT ?",
            (-1 if last is None else last,))
        return [GenerationRow(*row) for row in rows][::-1]

    def history_length(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM generations").fetchone()[0])

    def find(self, prefix: str) -> AgentRow:
        """The agent whose id is ``prefix`` or uniquely starts with it."""
        if not prefix or any(c not in "0123456789abcdef-" for c in prefix.lower()):
            raise UnknownAgent(f"no agent {prefix!r}: ids are UUIDs")
        rows = self._db.execute(
            f"SELECT {AGENT_COLUMNS} FROM agents WHERE id >= ? AND id < ? LIMIT 2",
            (prefix.lower(), prefix.lower() + "\x7f"),
        ).fetchall()
        if not rows:
            raise UnknownAgent(f"no agent {prefix!r}")
        if len(rows) > 1:
            raise UnknownAgent(f"{prefix!r} matches more than one agent; give more of the id")
        return AgentRow(*rows[0])

    def templates(self) -> list[TemplateVersion]:
        """Every template version, oldest first, with how many living agents run it."""
        rows = self._db.execute(
            "SELECT t.fingerprint, t.created, t.genes, t.files, (SELECT count(*) FROM agents a "
            "WHERE a.template = t.fingerprint AND a.status != 'dead') FROM templates t "
            "ORDER BY t.created, t.fingerprint")
        return [TemplateVersion(row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4])
                for row in rows]

    def known_genes(self) -> dict[str, set[str]]:
        """Every gene any template version ever had: module path -> its functions."""
        known: dict[str, set[str]] = {}
        for version in self.templates():
            for path, functions in version.genes.items():
                known.setdefault(path, set()).update(functions)
        return known

    def add_template(self, fingerprint: str, genes: Mapping[str, Sequence[str]],
                     files: Mapping[str, str]) -> bool:
        """Record a template version (its genes, its files' digests) and make it the
        newest (a content the template had before may come back); False if known."""
        with self.transaction() as db:
            added = db.execute(
                "INSERT OR IGNORE INTO templates (fingerprint, created, genes, files) "
                "VALUES (?, ?, ?, ?)",
                (fingerprint, time.time(), json.dumps({k: list(v) for k, v in genes.items()},
                                                      sort_keys=True),
                 json.dumps(dict(files), sort_keys=True))).rowcount == 1
            db.execute("INSERT INTO meta (key, value) VALUES ('template', ?) ON CONFLICT "
                       "(key) DO UPDATE SET value = excluded.value", (fingerprint,))
            return added

    def template_refused(self) -> str | None:
        """Why the life cycle refuses ``agent_template/`` as it is now (None: it does not)."""
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = 'template_refused'").fetchone()
        return None if row is None else str(row[0])

    def set_template_refused(self, reason: str | None) -> None:
        with self.transaction() as db:
            if reason is None:
                db.execute("DELETE FROM meta WHERE key = 'template_refused'")
            else:
                db.execute("INSERT INTO meta (key, value) VALUES ('template_refused', ?) ON "
                           "CONFLICT (key) DO UPDATE SET value = excluded.value", (reason,))

    def newest_template(self) -> str | None:
        """The version births use: the one the template was made last."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'template'").fetchone()
        return None if row is None else str(row[0])

    def snapshot(self, destination: Path) -> None:
        """A consistent copy of the store at ``destination`` (SQLite's online backup: the
        life cycle may write meanwhile), its process records cleared: no process of
        this machine is the copy's."""
        target = sqlite3.connect(destination, isolation_level=None)
        try:
            self._db.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")  # one file, no -wal beside it
            target.execute("UPDATE agents SET process = 'stopped', pid = NULL, "
                           "pid_started = NULL")
        finally:
            target.close()

    def agents(self, status: str | None = None, order: str = "created",
               limit: int | None = None) -> list[AgentRow]:
        """Agents (``status``: one status, ``"living"``: all but the dead, None: all),
        best first for ``order`` ``fitness``, newest first for ``generation``, else oldest
        first, at most ``limit``."""
        where, args = "", list[object]()
        if status == "living":
            where = "WHERE status != 'dead'"
        elif status is not None:
            where, args = "WHERE status = ?", [status]
        sort = {"fitness": "fitness IS NULL, fitness DESC, id",
                "generation": "generation DESC, created, id",
                "evaluations": "evaluations DESC, id",
                "restarts": "restarts DESC, id"}.get(order, "created, id")
        sql = f"SELECT {AGENT_COLUMNS} FROM agents {where} ORDER BY {sort}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [AgentRow(*row) for row in self._db.execute(sql, args)]

    # -- the webhooks' outbox ------------------------------------------------

    def outbox_due(self, endpoint: str, now: float, limit: int = 64
                   ) -> list[tuple[int, str, str, float, int]]:
        """Messages for ``endpoint`` due by ``now``, oldest first: (id, message id,
        payload, created, attempts)."""
        rows = self._db.execute(
            "SELECT id, msg_id, payload, created, attempts FROM outbox WHERE endpoint = ? "
            "AND next_at <= ? ORDER BY id LIMIT ?", (endpoint, now, limit)).fetchall()
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    def outbox_next(self, endpoint: str) -> float | None:
        """When the next message for ``endpoint`` is due (None: none waits)."""
        row = self._db.execute("SELECT min(next_at) FROM outbox WHERE endpoint = ?",
                               (endpoint,)).fetchone()
        return None if row[0] is None else float(row[0])

    def outbox_delivered(self, messages: Sequence[int], endpoint: str, now: float) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(m,) for m in messages])
            self._webhook_status(db, endpoint, "delivered = delivered + ?, last_success = ?",
                                 (len(messages), now))

    def outbox_failed(self, messages: Sequence[int], endpoint: str, error: str,
                      retry_at: float, now: float) -> None:
        """A failed delivery of ``messages``: tried again at ``retry_at``."""
        with self.transaction() as db:
            db.executemany("UPDATE outbox SET attempts = attempts + 1, next_at = ?, "
                           "last_error = ? WHERE id = ?",
                           [(retry_at, error, m) for m in messages])
            self._webhook_status(db, endpoint, "last_error = ?, last_error_at = ?",
                                 (error, now))

    def outbox_expire(self, endpoint: str, created_before: float, now: float) -> int:
        """Drop ``endpoint``'s messages made before ``created_before`` (past ``max_age``),
        with one ``webhook_dropped`` event; how many."""
        if self._db.execute("SELECT 1 FROM outbox WHERE endpoint = ? AND created < ? LIMIT 1",
                            (endpoint, created_before)).fetchone() is None:
            return 0  # the common case: no write lock taken
        with self.transaction() as db:
            dropped = db.execute("DELETE FROM outbox WHERE endpoint = ? AND created < ?",
                                 (endpoint, created_before)).rowcount
            if dropped:
                self._webhook_status(db, endpoint, "dropped = dropped + ?", (dropped,))
                self._insert_events([Event("webhook_dropped", now, None, (
                    ("endpoint", endpoint), ("count", dropped),
                    ("error", "older than max_age")))], self.generation())
        return int(dropped)

    def webhook_report(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: backlog, oldest waiting, delivered, dropped, last success, error."""
        report: dict[str, dict[str, Any]] = {}
        for row in self._db.execute("SELECT endpoint, count(*), min(created) FROM outbox "
                                    "GROUP BY endpoint"):
            report[row[0]] = {"backlog": row[1], "oldest": row[2]}
        for row in self._db.execute("SELECT endpoint, delivered, dropped, last_success, "
                                    "last_error, last_error_at FROM webhook_status"):
            report.setdefault(row[0], {"backlog": 0, "oldest": None}).update(
                delivered=row[1], dropped=row[2], last_success=row[3], last_error=row[4],
                last_error_at=row[5])
        return report

    @staticmethod
    def _webhook_status(db: sqlite3.Connection, endpoint: str, assignments: str,
                        values: tuple[object, ...]) -> None:
        db.execute("INSERT OR IGNORE INTO webhook_status (endpoint) VALUES (?)", (endpoint,))
        db.execute(f"UPDATE webhook_status SET {assignments} WHERE endpoint = ?",
                   (*values, endpoint))

    def agents_after(self, rowid: int) -> tuple[list[AgentRow], int]:
        """Living agents listed after ``rowid`` (rows are never deleted, so rowids only
        grow): what another command (an ``init``) added; and the last rowid seen."""
        rows = self._db.execute(
            f"SELECT rowid, {AGENT_COLUMNS} FROM agents WHERE rowid > ? ORDER BY rowid",
            (rowid,)).fetchall()
        last = rows[-1][0] if rows else rowid
        return [AgentRow(*row[1:]) for row in rows if row[2] != "dead"], last

    def stale_processes(self) -> list[tuple[str, int, float | None]]:
        """Agents recorded with a process, as a crashed life cycle may have left them."""
        rows = self._db.execute("SELECT id, pid, pid_started FROM agents WHERE pid IS NOT NULL")
        return [(row[0], row[1], row[2]) for row in rows]

    def prune(self, keep_generations: int) -> tuple[int, int]:
        """Delete genomes no agent holds (variants an agent moved on from) and events older
        than ``keep_generations`` generations: the store grows with agents, not time.
        Returns (genomes, events) deleted."""
        with self.transaction() as db:
            genomes = db.execute("DELETE FROM genomes WHERE hash NOT IN "
                                 "(SELECT genome_hash FROM agents)").rowcount
            horizon = self.generation() - keep_generations
            events = db.execute("DELETE FROM events WHERE generation < ?",
                                (horizon,)).rowcount
            for table in ("gene_share", "fitness_history"):  # as old as the events kept
                db.execute(f"DELETE FROM {table} WHERE generation < ?", (horizon,))
        return genomes, events

    # -- proposals of new genes -------------------------------------------------------

    def add_proposal(self, agent: str, generation: int, name: str, source: str, digest: str,
                     received: float, rejected: str | None) -> int:
        """Record a proposal: pending, or already rejected with ``rejected``; its number.
        Rejected ones beyond the newest KEPT_REJECTED are dropped: bounded whatever
        agents send."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO proposals (agent, generation, name, source, digest, received, "
                "status, reason, decided) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (agent, generation, name, source, digest, received,
                 "pending" if rejected is None else "rejected", rejected,
                 None if rejected is None else received))
            db.execute("DELETE FROM proposals WHERE status = 'rejected' AND id <= "
                       "(SELECT id FROM proposals WHERE status = 'rejected' "
                       "ORDER BY id DESC LIMIT 1 OFFSET ?)", (KEPT_REJECTED,))
            return int(cursor.lastrowid or 0)

    def proposal_with(self, digest: str) -> int | None:
        """A proposal of the same (normalised) code, whatever became of it: a rejected
        rule is not tried again each time an agent finds it anew."""
        row = self._db.execute("SELECT id FROM proposals WHERE digest = ? LIMIT 1",
                               (digest,)).fetchone()
        return None if row is None else int(row[0])

    def proposals_count(self, status: str) -> int:
        return int(self._db.execute("SELECT count(*) FROM proposals WHERE status = ?",
                                    (status,)).fetchone()[0])

    def proposals_pending(self, limit: int) -> list[dict[str, Any]]:
        return self.proposals("pending", limit, oldest_first=True)

    def proposals(self, status: str | None = None, limit: int | None = None,
                  oldest_first: bool = False) -> list[dict[str, Any]]:
        where = "" if status is None else "WHERE status = ?"
        rows = self._db.execute(
            f"SELECT * FROM proposals {where} ORDER BY id {'ASC' if oldest_first else 'DESC'}"
            " LIMIT ?", (*(() if status is None else (status,)), -1 if limit is None else limit))
        return [{**dict(row), "figures": json.loads(row["figures"] or "{}")} for row in rows]

    def decide_proposal(self, number: int, accepted: bool, reason: str, module: str | None,
                        figures: dict[str, Any], now: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE proposals SET status = ?, reason = ?, module = ?, figures = ?, "
                       "decided = ? WHERE id = ?",
                       ("accepted" if accepted else "rejected", reason, module,
                        json.dumps(figures), now, number))

    def gene_shares(self) -> list[tuple[int, str, float]]:
        """(generation, gene, share of the active agents expressing it), oldest first."""
        return [(row[0], row[1], row[2]) for row in self._db.execute(
            "SELECT generation, gene, share FROM gene_share ORDER BY generation, gene")]

    def fitness_history(self, agent_id: str) -> list[tuple[int, float]]:
        """An agent's fitness when each generation it lived in closed, oldest first."""
        return [(row[0], row[1]) for row in self._db.execute(
            "SELECT generation, fitness FROM fitness_history WHERE agent = ? "
            "ORDER BY generation", (agent_id,))]

    def clear_processes(self) -> int:
        """Record every agent as without a process (its stale ones were ended): how many
        records said otherwise. The dead too: their records must not claim a pid."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE agents SET process = 'stopped', pid = NULL, pid_started = NULL "
                "WHERE pid IS NOT NULL OR process != 'stopped'")
            return cursor.rowcount

    def save_pass(
        self,
        updates: Sequence[AgentUpdate],
        genomes: Iterable[tuple[str, bytes]],
        events: Sequence[Event],
        generations: Sequence[GenerationRow] = (),
        births: Sequence[AgentRow] = (),
        outbox: Sequence[tuple[str, str, str]] = (),
        details: Sequence[GenerationDetail] = (),
    ) -> None:
        """One pass's changes in one transaction: births, agents, genomes, events, history,
        and the webhook messages its events make (endpoint, message id, payload)."""
        now = time.time()
        with self.transaction() as db:
            db.executemany("INSERT INTO outbox (endpoint, msg_id, payload, created, next_at) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [(e, m, p, now, now) for e, m, p in outbox])
            db.executemany("INSERT OR IGNORE INTO genomes (hash, data) VALUES (?, ?)", genomes)
            self._insert_agents(births)
            db.executemany(
                f"UPDATE agents SET {UPDATE_ASSIGNMENTS}, updated = ? WHERE id = ?",
                [(*update[1:], now, update.id) for update in updates],
            )
            generation = self.generation()
            for row in generations:
                db.execute(
                    f"INSERT INTO generations (time, {GENERATION_COLUMNS}) "
                    f"VALUES (?, {', '.join('?' * len(row))}) ON CONFLICT (generation) "
                    "DO UPDATE SET time = excluded.time, mean = excluded.mean, "
                    "max = excluded.max, population = excluded.population, "
                    "births = excluded.births, deaths = excluded.deaths, "
                    "min = excluded.min, sd = excluded.sd, tasks = excluded.tasks",
                    (now, *row),
                )
                generation = max(generation, row.generation)
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation),))
            for detail in details:
                db.executemany("INSERT OR REPLACE INTO gene_share (generation, gene, share) "
                               "VALUES (?, ?, ?)",
                               [(detail.generation, *share) for share in detail.shares])
                db.executemany("INSERT OR REPLACE INTO fitness_history (agent, generation, "
                               "fitness) VALUES (?, ?, ?)",
                               [(agent, detail.generation, value)
                                for agent, value in detail.fitness])
            db.execute("INSERT INTO meta (key, value) VALUES ('last_pass', ?) ON CONFLICT (key) "
                       "DO UPDATE SET value = excluded.value", (repr(now),))
            self._insert_events(events, generation)

    def last_pass(self) -> float | None:
        """When a life cycle last saved a pass (None: never)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'last_pass'").fetchone()
        return None if row is None else float(row[0])

    def lineage(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent, its parent, its parent's parent... up to a founder (oldest last)."""
        rows = self._db.execute(
            "WITH RECURSIVE line(id, depth) AS (SELECT ?, 0 UNION ALL "
            "SELECT agents.parent, line.depth + 1 FROM agents JOIN line ON agents.id = line.id "
            "WHERE agents.parent IS NOT NULL AND line.depth < 100000) "
            "SELECT agents.id, agents.status, agents.generation, agents.parent, agents.fitness, "
            "agents.genome_hash, agents.template, agents.created "
            "FROM line JOIN agents ON agents.id = line.id "
            "ORDER BY line.depth",
            (agent_id,),
        )
        return [dict(row) for row in rows]

    def children(self, agent_id: str) -> list[str]:
        rows = self._db.execute("SELECT id FROM agents WHERE parent = ? ORDER BY created, id",
                                (agent_id,))
        return [row[0] for row in rows]

    def genome_bytes(self, genome_hash: str) -> bytes | None:
        row = self._db.execute("SELECT data FROM genomes WHERE hash = ?", (genome_hash,)).fetchone()
        return None if row is None else bytes(row[0])

    def events_of(self, agent: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT time, kind, generation, data FROM events WHERE agent = ? "
            "ORDER BY id DESC LIMIT ?", (agent, limit),
        )
        return [{**dict(row), "data": json.loads(row["data"])} for row in rows][::-1]

    # -- writes ------------------------------------------------------------

    def add_agents(
        self,
        records: Sequence[AgentRow],
        genomes: Iterable[tuple[str, bytes]],
        events: Iterable[Event],
    ) -> None:
        """List new agents, keep their genomes and log their events: all or nothing.
        Founders made before the first generation closes are generation 0's births;
        later ones (an init beside a life cycle) join the next generation's population."""
        now = time.time()
        generation = self.generation()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO genomes (hash, data) VALUES (?, ?)", genomes
            )
            self._insert_agents(records)
            self._insert_events(events, generation)
            if generation:  # a closed generation's row stays as it was closed
                return
            living = db.execute("SELECT count(*) FROM agents WHERE status != 'dead'").fetchone()[0]
            db.execute(
                "INSERT INTO generations (generation, time, population, births, deaths) "
                "VALUES (?, ?, ?, ?, 0) ON CONFLICT (generation) DO UPDATE SET "
                "population = excluded.population, births = births + excluded.births",
                (generation, now, living, len(records)),
            )

    def _insert_agents(self, records: Iterable[AgentRow]) -> None:
        self._db.executemany(
            f"INSERT INTO agents ({AGENT_COLUMNS}) "
            f"VALUES ({', '.join('?' * len(AgentRow._fields))})",
            list(records),
        )

    def _insert_events(self, events: Iterable[Event], generation: int) -> None:
        self._db.executemany(
            "INSERT INTO events (time, kind, agent, generation, data) VALUES (?, ?, ?, ?, ?)",
            [(e.time, e.kind, e.agent, generation, json.dumps(dict(e.data), sort_keys=True))
             for e in events],
        )


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own)."""
    return [s.strip() for s in script.split(";") if s.strip()]
