"""Backup while running, restore elsewhere and resume, export one agent, list them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import msgpack

from evolve_ai.testing import (
    FAST_SETTINGS,
    evolve_command,
    init_workspace,
    read_events,
    run_evolve,
    start_life_cycle,
    status_json,
    stop_life_cycle,
    wait_until,
)


def _running_workspace(tmp_path: Path, count: int = 6) -> Path:
    return init_workspace(tmp_path / "ws", count, seed=2, settings={
        **FAST_SETTINGS, "selection.every": 2})


def _genomes(root: Path) -> dict[str, bytes]:
    return {p.name: (p / "genome.bin").read_bytes() for p in (root / "agents").iterdir()}


def test_a_backup_taken_while_running_restores_elsewhere_and_resumes(tmp_path: Path) -> None:
    root = _running_workspace(tmp_path)
    proc = start_life_cycle(root)
    try:
        wait_until(lambda: status_json(root)["generation"] >= 1, 60, "a first generation")
        result = run_evolve(root, "backup")
        assert result.returncode == 0, result.stderr
        assert proc.poll() is None
    finally:
        stop_life_cycle(proc)
    [archive] = (root / "backups").iterdir()
    assert archive.name.startswith("evolve-g") and archive.name.endswith(".tar.gz")
    assert f"to {archive}" in result.stdout
    # What the archive holds, as of the backup: restore it into a new directory.
    copy = tmp_path / "elsewhere"
    restored = run_evolve(copy, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    status = status_json(copy)
    assert status["counts"]["running"] == 0
    held = _genomes(copy)
    everyone = {a["id"] for a in json.loads(run_evolve(root, "agents", "--status", "all",
                                                       "--json").stdout)}
    assert held and set(held) <= everyone
    assert len(held) == status["counts"]["active"] + status["counts"]["disabled"] + \
        status["counts"]["quarantined"]
    assert (copy / "evolve.toml").read_text() == (root / "evolve.toml").read_text()
    again = run_evolve(copy, "life-cycle", "--once")
    assert again.returncode == 0, again.stderr
    assert read_events(copy, "quarantined") == []
    assert status_json(copy)["fitness"]["mean"] is not None


def test_a_damaged_archive_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    root = _running_workspace(tmp_path, 3)
    archive = tmp_path / "pop.tar.gz"
    assert run_evolve(root, "backup", str(archive)).returncode == 0
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    clipped = tmp_path / "clipped.tar.gz"  # the gzip trailer cut: tar alone would not see it
    clipped.write_bytes(data[:-3])
    flipped = tmp_path / "flipped.tar.gz"
    flipped.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    # A member changed, the archive itself well formed: the manifest catches it.
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(archive) as source, tarfile.open(forged, "w:gz") as target:
        for member in source:
            content = source.extractfile(member)
            assert content is not None
            body = content.read()
            if member.name == "evolve.toml":
                body += b"\n# changed\n"
                member.size = len(body)
            target.addfile(member, io.BytesIO(body))
    for bad in (truncated, clipped, flipped, forged, tmp_path / "missing.tar.gz"):
        target_dir = tmp_path / f"into-{bad.stem}"
        result = run_evolve(target_dir, "restore", str(bad))
        assert result.returncode == 1, (bad, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert not target_dir.exists() or not any(target_dir.iterdir())
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    result = run_evolve(full, "restore", str(archive))
    assert result.returncode == 1 and "not empty" in result.stderr
    assert [p.name for p in full.iterdir()] == ["mine.txt"]


def test_automatic_backups_keep_the_newest(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws", 4, seed=3, settings={
        **FAST_SETTINGS, "selection.every": 1, "backup.every": 1, "backup.keep": 2})
    result = run_evolve(root, "life-cycle", "--generations", "3")
    assert result.returncode == 0, result.stderr
    kept = sorted(p.name for p in (root / "backups").iterdir())
    done = read_events(root, "backup_done")
    # One at a time, on a thread: one due while the last still runs is skipped.
    assert len(done) + len(read_events(root, "backup_skipped")) == 3
    assert len(done) >= 2 and len(kept) == 2
    assert kept == sorted(Path(e["path"]).name for e in done)[-2:]


def test_the_best_agent_exported_runs_on_its_own(tmp_path: Path) -> None:
    root = _running_workspace(tmp_path, 4)
    assert run_evolve(root, "life-cycle", "--once").returncode == 0
    ranked = json.loads(run_evolve(root, "agents", "--sort", "fitness", "--json").stdout)
    fitness = [a["fitness"] for a in ranked if a["fitness"] is not None]
    assert fitness == sorted(fitness, reverse=True) and fitness
    assert len(json.loads(run_evolve(root, "agents", "--limit", "2", "--json").stdout)) == 2
    out = tmp_path / "best"
    result = run_evolve(root, "export", "--best", str(out))
    assert result.returncode == 0, result.stderr
    assert msgpack.unpackb((out / "genome.bin").read_bytes()) == msgpack.unpackb(
        (root / "agents" / ranked[0]["id"] / "genome.bin").read_bytes())
    task = json.dumps({"type": "task", "id": "t1", "data": [2, 4, 6, 8]}) + "\n"
    env = {**os.environ, "PYTHONPATH": "src"}
    env.pop("EVOLVE_ROOT", None)
    ran = subprocess.run([sys.executable, "-m", "agent.main"], cwd=out, input=task,
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert ran.returncode == 0, ran.stderr
    replies = [json.loads(line) for line in ran.stdout.splitlines()]
    assert replies[0]["type"] == "hello"
    assert any(r.get("type") == "answer" and r.get("id") == "t1" for r in replies)
    # Into a directory that holds something: refused, untouched.
    result = run_evolve(root, "export", ranked[0]["id"][:8], str(out))
    assert result.returncode == 1 and "not empty" in result.stderr
    assert run_evolve(root, "export").returncode == 2


def test_a_restore_killed_half_way_leaves_nothing_and_can_be_run_again(
        tmp_path: Path) -> None:
    root = _running_workspace(tmp_path, 200)
    archive = tmp_path / "pop.tar.gz"
    assert run_evolve(root, "backup", str(archive)).returncode == 0
    target = tmp_path / "restored"
    proc = subprocess.Popen([*evolve_command(), "--root", str(target), "restore",
                             str(archive)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    building = tmp_path / f".restored.restore-{proc.pid}"
    wait_until(lambda: building.exists() or proc.poll() is not None, 60, "the restore at work")
    proc.kill()
    proc.wait()
    assert building.exists(), "the restore ended before it could be killed"
    assert not target.exists()  # never half there
    result = run_evolve(target, "restore", str(archive))
    assert result.returncode == 0, result.stderr
    assert not building.exists()  # the killed one's leftovers are gone
    assert status_json(target)["counts"]["active"] == 200
    assert len(list((target / "agents").iterdir())) == 200
