from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from evolve_ai.core.records import AgentRecord, Event
from evolve_ai.errors import UnknownAgent, WorkspaceError
from evolve_ai.services.registry import SCHEMA_VERSION, Registry


def record(agent_id: str, status: str = "active") -> AgentRecord:
    return AgentRecord(id=agent_id, status=status, generation=0, parent=None,
                       genome_hash="g" * 32, code_hash="c" * 32, created=time.time(),
                       active_files=1, active_functions=2)


IDS = ["0a1b0000-0000-4000-8000-000000000001", "0a1c0000-0000-4000-8000-000000000002",
       "ff000000-0000-4000-8000-000000000003"]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry.open(tmp_path / "evolve.db", create=True)
    reg.add_agents([record(i) for i in IDS], [("g" * 32, b"\x80")],
                   [Event("created", time.time(), i) for i in IDS])
    return reg


def test_schema_is_versioned_and_in_wal_mode(registry: Registry) -> None:
    db = sqlite3.connect(registry.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_listing_counts_history(registry: Registry) -> None:
    assert registry.counts() == {"active": 3, "disabled": 0, "quarantined": 0, "dead": 0,
                                 "running": 0}
    assert registry.living_ids() == set(IDS)
    assert registry.history() == [{"generation": 0, "mean": None, "max": None,
                                   "population": 3, "births": 3, "deaths": 0}]
    registry.add_agents([record("0b000000-0000-4000-8000-000000000004")], [], [])
    assert registry.history()[0]["births"] == 4
    assert registry.history()[0]["population"] == 4
    assert registry.agents_ever() == 4
    assert registry.fitness_summary() == {"mean": None, "max": None}


def test_find_by_prefix(registry: Registry) -> None:
    assert registry.find("ff")["id"] == IDS[2]
    assert registry.find(IDS[0].upper())["id"] == IDS[0]
    with pytest.raises(UnknownAgent, match="more than one"):
        registry.find("0a1")
    with pytest.raises(UnknownAgent, match="no agent"):
        registry.find("0a2")
    with pytest.raises(UnknownAgent, match="UUID"):
        registry.find("'; DROP TABLE agents; --")
    assert registry.events_of(IDS[0])[0]["kind"] == "created"
    assert registry.genome_bytes("g" * 32) == b"\x80"


def test_a_failed_write_changes_nothing(registry: Registry) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        registry.add_agents([record("0c000000-0000-4000-8000-000000000005"), record(IDS[0])],
                            [], [Event("created", time.time(), "x")])
    assert registry.agents_ever() == 3
    assert registry.history()[0]["births"] == 3
    assert registry.events_of("x") == []


def test_reopen_keeps_everything(registry: Registry) -> None:
    registry.close()
    with Registry.open(registry.path) as again:
        assert again.living_ids() == set(IDS)


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="run 'evolve init N' first"):
        Registry.open(tmp_path / "nope.db")


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "evolve.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(WorkspaceError, match="not a usable evolve database"):
        Registry.open(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evolve.db"
    Registry.open(path, create=True).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(WorkspaceError, match="newer than this evolve"):
        Registry.open(path)
