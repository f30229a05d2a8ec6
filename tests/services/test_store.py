from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from evolve_ai.core.records import AgentRow, AgentUpdate, Event, GenerationDetail, GenerationRow
from evolve_ai.errors import UnknownAgent, WorkspaceError
from evolve_ai.services.store import SCHEMA_VERSION, Store


def record(agent_id: str) -> AgentRow:
    now = time.time()
    return AgentRow(id=agent_id, status="active", generation=0, parent=None,
                    genome_hash="g" * 32, code_hash="c" * 32, created=now, updated=now,
                    active_files=1, active_functions=2)


IDS = ["0a1b0000-0000-4000-8000-000000000001", "0a1c0000-0000-4000-8000-000000000002",
       "ff000000-0000-4000-8000-000000000003"]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    reg = Store.open(tmp_path / "evolve.db", create=True)
    reg.add_agents([record(i) for i in IDS], [("g" * 32, b"\x80")],
                   [Event("created", time.time(), i) for i in IDS])
    return reg


def test_schema_is_versioned_and_in_wal_mode(store: Store) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_listing_counts_history(store: Store) -> None:
    assert store.counts() == {"active": 3, "disabled": 0, "quarantined": 0, "dead": 0,
                                 "running": 0}
    assert store.living_ids() == set(IDS)
    assert store.history() == [GenerationRow(generation=0, mean=None, max=None,
                                             population=3, births=3, deaths=0)]
    store.add_agents([record("0b000000-0000-4000-8000-000000000004")], [], [])
    assert store.history()[0].births == 4
    assert store.history()[0].population == 4
    assert store.agents_ever() == 4
    assert store.fitness_summary() == {"mean": None, "max": None}


def test_find_by_prefix(store: Store) -> None:
    assert store.find("ff").id == IDS[2]
    assert store.find(IDS[0].upper()).id == IDS[0]
    with pytest.raises(UnknownAgent, match="more than one"):
        store.find("0a1")
    with pytest.raises(UnknownAgent, match="no agent"):
        store.find("0a2")
    with pytest.raises(UnknownAgent, match="UUID"):
        store.find("'; DROP TABLE agents; --")
    assert store.events_of(IDS[0])[0]["kind"] == "created"
    assert store.genome_bytes("g" * 32) == b"\x80"


def test_a_failed_write_changes_nothing(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.add_agents([record("0c000000-0000-4000-8000-000000000005"), record(IDS[0])],
                            [], [Event("created", time.time(), "x")])
    assert store.agents_ever() == 3
    assert store.history()[0].births == 3
    assert store.events_of("x") == []


def test_a_pass_is_saved_field_for_field(store: Store) -> None:
    """Every field of an AgentUpdate lands in its column; the generation row and births too."""
    before = store.find(IDS[1])
    update = AgentUpdate(
        id=IDS[1], status="disabled", reason="crashed 6 times in a row", genome_hash="h" * 32,
        code_hash="d" * 32, active_files=3, active_functions=4, lines=50, complexity=7,
        mutations=2, fitness=0.25, evaluations=64, restarts=6, process="running", pid=4242,
        pid_started=1234.5, energy=0.5, idle_generations=1, template="t" * 32)
    child = record("0d000000-0000-4000-8000-000000000006")._replace(parent=IDS[1], generation=1)
    store.save_pass([update], [("h" * 32, b"\x81")], [Event("disabled", time.time(), IDS[1])],
                    [GenerationRow(1, 0.125, 0.25, 4, 1, 0)], [child])
    after = store.find(IDS[1])
    assert after._replace(updated=0.0) == AgentRow(
        **{**before._asdict(), **update._asdict(), "updated": 0.0})
    assert store.find(child.id) == child
    assert store.generation() == 1
    assert store.history()[-1] == GenerationRow(1, 0.125, 0.25, 4, 1, 0)
    assert store.agents_after(0)[0][-1] == child
    assert store.genome_bytes("h" * 32) == b"\x81"


def test_reopen_keeps_everything(store: Store) -> None:
    store.close()
    with Store.open(store.path) as again:
        assert again.living_ids() == set(IDS)


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="run 'evolve init N' first"):
        Store.open(tmp_path / "nope.db")


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "evolve.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(WorkspaceError, match="not a usable evolve database"):
        Store.open(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evolve.db"
    Store.open(path, create=True).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(WorkspaceError, match="newer than this evolve"):
        Store.open(path)


def test_an_empty_database_is_refused_and_left_empty(tmp_path: Path) -> None:
    """Only init makes a schema: a 0-byte store found by any other command is lost data."""
    path = tmp_path / "evolve.db"
    path.write_bytes(b"")
    with pytest.raises(WorkspaceError, match="is empty"):
        Store.open(path)
    assert path.read_bytes() == b""
    with Store.open(path, create=True) as made:  # init, in a workspace of nobody
        assert made.agents_ever() == 0


@pytest.mark.parametrize("foreign", [
    "CREATE TABLE notes (text TEXT)",
    "PRAGMA application_id = 1234",
    "PRAGMA user_version = 2",
], ids=["other tables", "other application", "versioned without agents"])
def test_another_programs_database_is_refused(tmp_path: Path, foreign: str) -> None:
    path = tmp_path / "evolve.db"
    db = sqlite3.connect(path)
    db.execute(foreign)
    db.commit()
    db.close()
    before = path.read_bytes()
    for create in (False, True):
        with pytest.raises(WorkspaceError, match="not an evolve store"):
            Store.open(path, create=create)
    assert path.read_bytes() == before


def test_a_store_is_marked_as_evolves(store: Store) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == 0x65766F6C


def test_garbage_in_a_page_fails_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "evolve.db"
    with Store.open(path, create=True) as made:
        now = time.time()
        made.add_agents([AgentRow(f"0e000000-0000-4000-8000-{n:012d}", "active", 0, None,
                                  "g" * 32, "c" * 32, now, now) for n in range(400)], [], [])
        made.check_integrity()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page: 3 * page] = b"\xa5" * page  # a whole B-tree page
    path.write_bytes(bytes(data))
    with pytest.raises(WorkspaceError, match="damaged"), Store.open(path) as damaged:
        damaged.check_integrity()


def test_prune_keeps_every_genome_an_agent_holds_and_recent_events(store: Store) -> None:
    """Genomes no agent holds go (the dead's stay: show needs them); old events go."""
    now = time.time()
    dead = record("0d000000-0000-4000-8000-000000000009")._replace(status="dead",
                                                                   genome_hash="d" * 32)
    store.add_agents([dead], [("d" * 32, b"\x82")], [])
    store.save_pass([], [("o" * 32, b"\x83")], [Event("mutated", now, IDS[0])],
                    [GenerationRow(g, None, None, 4, 0, 0) for g in (1, 2, 3)])
    assert store.prune(keep_generations=1) == (1, 3)  # the orphan; the 3 of generation 0
    assert store.genome_bytes("o" * 32) is None
    assert store.genome_bytes("d" * 32) == b"\x82" and store.genome_bytes("g" * 32) == b"\x80"
    assert [e["kind"] for e in store.events_of(IDS[0])] == ["mutated"]  # generation 3


def test_what_the_dashboard_draws_is_kept_with_each_generation(store: Store) -> None:
    """Spread, gene shares and each agent's fitness at the close; pruned like events."""
    details = [GenerationDetail(g, (("x.py:f", 0.25 * g), ("x.py:g", 1.0)),
                                ((IDS[0], 0.1 * g), (IDS[1], 0.5))) for g in (1, 2, 3)]
    store.save_pass([], [], [], [GenerationRow(g, 0.3, 0.5, 4, 0, 0, 0.1, 0.05)
                                 for g in (1, 2, 3)], details=details)
    [first] = [row for row in store.history() if row.generation == 1]
    assert (first.min, first.sd) == (0.1, 0.05)
    assert store.gene_shares()[:2] == [(1, "x.py:f", 0.25), (1, "x.py:g", 1.0)]
    assert [(g, round(f, 9)) for g, f in store.fitness_history(IDS[0])] == [
        (1, 0.1), (2, 0.2), (3, 0.3)]
    store.prune(keep_generations=1)  # generation 3 is the newest: 2 and 3 stay
    assert {g for g, _, _ in store.gene_shares()} == {2, 3}
    assert [g for g, _ in store.fitness_history(IDS[1])] == [2, 3]
    assert len(store.history()) == 4  # the history rows are kept (0 and 1..3)


def test_template_versions_are_recorded_once_with_their_agents(store: Store) -> None:
    """A version is listed once, oldest first; each counts the living agents that run it."""
    assert store.add_template("a" * 32, {"src/agent/x.py": ("f", "g")}, {"src/agent/x.py": "1"})
    assert not store.add_template("a" * 32, {}, {})  # known: nothing changes
    assert store.add_template("b" * 32, {"src/agent/x.py": ("f",)}, {"src/agent/x.py": "2"})
    first = store.find(IDS[0])
    update = AgentUpdate(**{k: v for k, v in first._asdict().items()
                            if k in AgentUpdate._fields} | {"template": "b" * 32})
    store.save_pass([update], [], [])
    versions = store.templates()
    assert [(v.fingerprint, v.agents) for v in versions] == [("a" * 32, 0), ("b" * 32, 1)]
    assert versions[0].genes == {"src/agent/x.py": ["f", "g"]}
    assert versions[1].files == {"src/agent/x.py": "2"}
