"""No command destroys a population: a lost, foreign or damaged store is refused with one
line, and nothing the store does not vouch for is deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve_ai.testing import init_workspace, run_evolve, snapshot, write_template


def agents_and_store(root: Path) -> dict[str, bytes]:
    return {**snapshot(root / "agents"),
            **{f"db/{k}": v for k, v in snapshot(root / "workspace").items()
               if k.startswith("evolve.db")}}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    template = write_template(tmp_path / "tpl")
    return init_workspace(tmp_path / "ws", 3, template=template, seed=1)


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["life-cycle", "--once"],
                                     ["init", "2"], ["show", "0"], ["lineage", "0"]],
                         ids=" ".join)
def test_empty_database_never_deletes_agents(root: Path, command: list[str]) -> None:
    """A 0-byte evolve.db used to make `status` delete every agent directory as debris."""
    (root / "workspace" / "evolve.db").write_bytes(b"")
    before = agents_and_store(root)
    result = run_evolve(root, *command)
    assert result.returncode == 1
    assert "evolve.db is empty" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert agents_and_store(root) == before


def test_a_foreign_database_is_refused(root: Path) -> None:
    import sqlite3

    db_path = root / "workspace" / "evolve.db"
    db_path.unlink()
    for suffix in ("-wal", "-shm"):
        (root / "workspace" / f"evolve.db{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE bookmarks (url TEXT)")
    db.commit()
    db.close()
    before = agents_and_store(root)
    for command in (["status"], ["life-cycle", "--once"], ["init", "1"]):
        result = run_evolve(root, *command)
        assert result.returncode == 1, command
        assert "not an evolve store" in result.stderr
    assert agents_and_store(root) == before


def test_a_damaged_store_stops_a_life_cycle_before_it_starts(root: Path) -> None:
    path = root / "workspace" / "evolve.db"
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    data[page: 2 * page] = b"\xa5" * page  # garbage over a whole B-tree page
    path.write_bytes(bytes(data))
    before = snapshot(root / "agents")
    result = run_evolve(root, "life-cycle", "--once")
    assert result.returncode == 1
    assert "damaged" in result.stderr and "Traceback" not in result.stderr
    status = run_evolve(root, "status")  # a reader gets one line too, never a traceback
    assert status.returncode == 1 and len(status.stderr.strip().splitlines()) == 1
    assert snapshot(root / "agents") == before


def test_agents_moved_but_never_listed_are_kept_in_the_trash(root: Path) -> None:
    """A kill between the move into agents/ and the commit leaves unlisted dirs: they are
    not the store's to delete, so they are set aside, whole, and the user told."""
    orphan = root / "agents" / "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    orphan.mkdir()
    (orphan / "genome.bin").write_bytes(b"\x80")
    result = run_evolve(root, "status")
    assert result.returncode == 0
    assert not orphan.exists()
    kept = [p for p in (root / "workspace" / "trash").iterdir()
            if p.name.startswith(orphan.name)]
    assert len(kept) == 1 and (kept[0] / "genome.bin").read_bytes() == b"\x80"
