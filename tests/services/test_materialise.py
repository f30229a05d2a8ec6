"""Agents laid out on a node without the head's files: bundles, the node's shelf, and a
node actor's body running an agent from its own copy (no Ray needed)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from evolve_ai.services.launcher import LaunchError
from evolve_ai.services.materialise import (
    MAX_GENOME,
    Bundle,
    Shelf,
    bundle,
    commons_files,
    relocate,
    sweep_stale,
)
from evolve_ai.services.ray_node import Node
from tests.services.test_forkserver_launcher import spec_for, write_agent

# Rewrites its genome, says so, then says where it runs and what the commons holds.
REWRITER = """\
import json, os, sys
with open("genome.bin", "wb") as out:
    out.write(b"rewritten")
commons = os.environ["EVOLVE_COMMONS"]
print(json.dumps({"cwd": os.getcwd(), "commons": sorted(os.listdir(commons))}), flush=True)
sys.stdin.read()
"""


def agent_dir(tmp_path: Path, source: str) -> Path:
    directory = write_agent(tmp_path / "head" / "a1", source)
    (directory / "genome.bin").write_bytes(b"original")
    (directory / "notes.txt").write_text("not part of an agent's derived data")
    return directory


def test_a_bundle_ships_each_content_once_per_node(tmp_path: Path) -> None:
    first = agent_dir(tmp_path, "print('x')\n")
    second = write_agent(tmp_path / "head" / "a2", "print('x')\n")
    (second / "genome.bin").write_bytes(b"another")
    known: set[str] = set()
    one = bundle(first, known)
    assert [path for path, _ in one.files] == ["src/agent/__init__.py", "src/agent/main.py",
                                               "genome.bin"]
    assert len(one.blobs) == 3 and len(known) == 2  # the genome is never "known"
    two = bundle(second, known)  # same sources: only its genome travels
    assert list(two.blobs.values()) == [b"another"]
    # A child's genome is its parent's: it travels all the same (nodes keep no genome).
    (second / "genome.bin").write_bytes(b"original")
    assert list(bundle(second, known).blobs.values()) == [b"original"]


def test_a_shelf_lays_out_exactly_the_bundle_and_refuses_escapes(tmp_path: Path) -> None:
    source = agent_dir(tmp_path, "print('x')\n")
    shelf = Shelf(tmp_path / "node")
    placed = shelf.place("a1", bundle(source, set()), None, str(source))
    assert sorted(p.relative_to(placed).as_posix() for p in placed.rglob("*") if p.is_file()
                  ) == ["genome.bin", "src/agent/__init__.py", "src/agent/main.py"]
    assert (placed / "genome.bin").read_bytes() == b"original"
    with pytest.raises(LaunchError, match="not a path inside"):
        shelf.place("a2", Bundle((("../../x", "k"),), {"k": b"x"}), None, "/h/a2")
    with pytest.raises(LaunchError, match="not an agent id"):
        shelf.place("../a", Bundle((), {}), None, "/h/a")
    with pytest.raises(LaunchError, match="lacks its bytes"):
        shelf.place("a3", Bundle((("genome.bin", "missing"),), {}), None, "/h/a3")
    assert all(key not in shelf.blobs for key in bundle(source, set()).blobs
               if bundle(source, set()).blobs[key] == b"original")  # genomes never kept


def test_relocation_moves_every_path_of_the_agent_and_nothing_else(tmp_path: Path) -> None:
    spec = spec_for(tmp_path / "head" / "a1", env={"EVOLVE_COMMONS": "/head/commons",
                                                  "PATH": "/usr/bin"})
    moved = relocate(spec, tmp_path / "node" / "a1", tmp_path / "node" / "commons")
    assert moved.cwd == str(tmp_path / "node" / "a1")
    assert moved.writable == (str(tmp_path / "node" / "a1"),)
    assert moved.readonly_within == (str(tmp_path / "node" / "a1" / "src"),)
    assert moved.env["EVOLVE_COMMONS"] == str(tmp_path / "node" / "commons")
    assert moved.env["PATH"] == "/usr/bin" and moved.pycache_prefix is None


def test_a_node_runs_an_agent_from_its_own_copy_and_reports_its_genome(
        tmp_path: Path) -> None:
    head = agent_dir(tmp_path, REWRITER)
    commons = tmp_path / "head-commons"
    (commons / "elite").mkdir(parents=True)
    (commons / "catalogue.msgpack").write_bytes(b"\x80")
    (commons / "elite" / "g.bin").write_bytes(b"elite")
    node = Node(root=str(tmp_path / "node"))
    try:
        node.set_commons(commons_files(commons))
        pid, _ = node.spawn(spec_for(head), str(tmp_path / "unused.log"), bundle(head, set()))
        said = b""
        deadline = time.monotonic() + 10
        while b"cwd" not in said and time.monotonic() < deadline:
            said += node.exchange({}, [], []).output.get(pid, b"")
            time.sleep(0.02)
        assert f"/node-{os.getpid()}/agents/a1".encode() in said
        assert b'"commons": ["catalogue.msgpack", "elite"]' in said
        assert (head / "genome.bin").read_bytes() == b"original"  # the head's untouched
        [report] = node.genomes()
        assert (report.agent_id, report.head, report.data) == ("a1", str(head), b"rewritten")
        assert node.genomes() == [report]  # until it is laid out again: a lost answer is
        batch = node.exchange({}, [pid], [])  # no lost genome
        while not batch.exits and time.monotonic() < deadline:
            time.sleep(0.02)
            batch = node.exchange({}, [], [])
        assert batch.exits == [(pid, 0)]
        assert batch.genomes == [report]  # its last word, with its exit
        assert node.genomes() == []
        assert not (tmp_path / "node" / f"node-{os.getpid()}" / "agents" / "a1").exists()
    finally:
        node.close()
    assert not (tmp_path / "node" / f"node-{os.getpid()}").exists()  # gone with the node


@pytest.mark.parametrize("attack", ["symlink", "fifo", "oversized"])
def test_a_genome_that_is_no_regular_file_is_reported_empty_never_followed(
        tmp_path: Path, attack: str) -> None:
    """A link to a file the agent may not read, a fifo to hang the node on, a huge file:
    reported as b"" (the head writes it; its scan then quarantines the agent), without
    following, blocking or reading past the bound."""
    source = agent_dir(tmp_path, "print('x')\n")
    secret = tmp_path / "secret"
    secret.write_bytes(b"root's secret")
    shelf = Shelf(tmp_path / "node")
    placed = shelf.place("a1", bundle(source, set()), None, str(source))
    genome = placed / "genome.bin"
    genome.unlink()
    if attack == "symlink":
        genome.symlink_to(secret)
    elif attack == "fifo":
        os.mkfifo(genome)
    else:
        genome.write_bytes(b"x" * (MAX_GENOME + 1))
    [report] = shelf.reports()
    assert report.data == b""


def test_a_touched_back_genome_is_still_seen(tmp_path: Path) -> None:
    """Rewritten, then its times set back: the stamp holds the change time and inode."""
    source = agent_dir(tmp_path, "print('x')\n")
    shelf = Shelf(tmp_path / "node")
    placed = shelf.place("a1", bundle(source, set()), None, str(source))
    genome = placed / "genome.bin"
    before = genome.stat()
    replacement = placed / "new.bin"
    replacement.write_bytes(b"originaX")  # same size
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    replacement.replace(genome)
    [report] = shelf.reports()
    assert report.data == b"originaX"


def test_places_of_dead_node_actors_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / "node-4194305"  # above any pid_max: no such process
    live = tmp_path / f"node-{os.getpid()}"
    other = tmp_path / "notes"
    for place in (dead, live, other):
        (place / "agents").mkdir(parents=True)
    sweep_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
