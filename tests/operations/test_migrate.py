"""Moving an agent's copy of the template to another version, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve_ai.operations.versions import TAMPERING, migrate

OLD = {"pyproject.toml": b'[project]\nname = "agent"\n',
       "src/agent/core.py": b"# core\n", "src/agent/gone.py": b"def g(t):\n    return 1\n",
       "src/agent/same.py": b"# same\n"}
NEW = {"pyproject.toml": b'[project]\nname = "agent"\nversion = "2"\n',
       "src/agent/core.py": b"# core, changed\n", "src/agent/same.py": b"# same\n",
       "src/agent/sub/new.py": b"def n(t):\n    return 2\n"}


def _agent(tmp_path: Path) -> Path:
    root = tmp_path / "agent"
    for path, data in OLD.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    (root / "genome.bin").write_bytes(b"mine")
    (root / "notes.txt").write_text("its own")
    return root


def test_an_agent_takes_the_new_version_and_keeps_what_is_its_own(tmp_path: Path) -> None:
    root = _agent(tmp_path)
    same = (root / "src/agent/same.py").stat().st_ino
    migrate(root, NEW, "abc")
    assert not (root / "src/agent/gone.py").exists()
    assert (root / "src/agent/core.py").read_bytes() == NEW["src/agent/core.py"]
    assert (root / "src/agent/sub/new.py").read_bytes() == NEW["src/agent/sub/new.py"]
    assert (root / "src/agent/same.py").stat().st_ino == same  # untouched
    assert 'name = "agent-abc"' in (root / "pyproject.toml").read_text()
    assert 'version = "2"' in (root / "pyproject.toml").read_text()
    assert (root / "genome.bin").read_bytes() == b"mine"
    assert (root / "notes.txt").read_text() == "its own"


def test_a_link_planted_in_the_tree_is_never_followed(tmp_path: Path) -> None:
    """A directory swapped for a link (only possible where the sandbox is degraded) would
    send the new file elsewhere: refused, and nothing is written there."""
    root = _agent(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "src/agent/sub").symlink_to(elsewhere)
    with pytest.raises(OSError, match="not a plain directory"):
        migrate(root, NEW, "abc")
    assert list(elsewhere.iterdir()) == []


def test_a_tree_a_crash_left_half_migrated_becomes_the_new_version(tmp_path: Path) -> None:
    """Some files already new, others still old, a temporary file of the interrupted
    write: migrating again (its version known or not) gives exactly the new tree."""
    for attempt in ("first", "again"):
        root = _agent(tmp_path / attempt)
        (root / "src/agent/sub").mkdir()
        (root / "src/agent/sub/new.py").write_bytes(NEW["src/agent/sub/new.py"])
        (root / "src/agent/.core.py.123.tmp").write_bytes(b"half")
        (root / "src/agent/same.py").write_bytes(b"# a third version's\n")
        migrate(root, NEW, "abc")
        held = {p.relative_to(root).as_posix() for p in (root / "src").rglob("*")
                if p.is_file()}
        assert held == {path for path in NEW if path.startswith("src/")}
        for path in held:
            assert (root / path).read_bytes() == NEW[path]


def test_a_link_where_a_file_goes_is_tampering(tmp_path: Path) -> None:
    root = _agent(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("not the agent's")
    (root / "src/agent/core.py").unlink()
    (root / "src/agent/core.py").symlink_to(secret)
    with pytest.raises(OSError) as caught:
        migrate(root, NEW, "abc")
    assert caught.value.errno in TAMPERING
    assert secret.read_text() == "not the agent's"
