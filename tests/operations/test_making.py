"""make_agents: the one way agents are made, for init and births."""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import pytest

from evolve_ai.core import genome as genome_codec
from evolve_ai.core.fingerprint import hash_bytes
from evolve_ai.operations.making import BuildError, Template, make_agents
from evolve_ai.services import template as template_service
from evolve_ai.services.workspace import Workspace
from evolve_ai.testing import write_template
from evolve_ai.workers.build import BuildRequest

IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]


def setup(tmp_path: Path) -> tuple[Workspace, Template]:
    workspace = Workspace(tmp_path / "ws")
    workspace.ensure_layout()
    files, catalogue = template_service.load(write_template(tmp_path / "template"))
    return workspace, Template(files, catalogue)


def requests(template: Template, count: int) -> list[BuildRequest]:
    rng = random.Random(1)
    return [BuildRequest(IDS[n], genome_codec.encode(
        genome_codec.random_genome(template.catalogue, rng))) for n in range(count)]


def alien_genome() -> bytes:
    """Valid msgpack naming a file the template does not have."""
    return msgpack.packb({"schema": 1, "files": [
        {"path": "src/agent/gone.py", "active": True, "functions": {}}],
        "mutations": 0, "state": {}}, use_bin_type=True)


@pytest.mark.parametrize("workers", [1, 2], ids=["inline", "pool"])
def test_agents_are_made_whole_and_listed_in_request_order(tmp_path: Path,
                                                           workers: int) -> None:
    workspace, template = setup(tmp_path)
    wanted = requests(template, 5)
    made = make_agents(workspace, template, wanted, label="init", generation=3,
                       parents={IDS[1]: "parent-id"}, workers=workers, chunk_size=2)
    assert [row.id for row in made.rows] == IDS[:5]
    assert made.failed == ()
    for row, request in zip(made.rows, wanted, strict=True):
        directory = workspace.agent_dir(row.id)
        assert (directory / "genome.bin").read_bytes() == request.genome
        assert (directory / "src" / "agent" / "main.py").is_file()
        assert row.genome_hash == hash_bytes(request.genome)
        assert (row.status, row.generation) == ("active", 3)
    assert made.rows[1].parent == "parent-id" and made.rows[0].parent is None
    assert list(workspace.staging_dir.iterdir()) == []  # nothing left behind


def test_an_agent_that_cannot_be_built_fails_alone(tmp_path: Path) -> None:
    """A birth whose genome names a gene the template lost: the others are born."""
    workspace, template = setup(tmp_path)
    wanted = [*requests(template, 2), BuildRequest(IDS[5], alien_genome())]
    made = make_agents(workspace, template, wanted, label="birth", generation=1)
    assert [row.id for row in made.rows] == IDS[:2]
    assert [failed.agent_id for failed in made.failed] == [IDS[5]]
    assert "gone.py" in made.failed[0].reason
    assert not workspace.agent_dir(IDS[5]).exists()
    assert list(workspace.staging_dir.iterdir()) == []


def test_all_or_nothing_makes_nothing_when_one_fails(tmp_path: Path) -> None:
    workspace, template = setup(tmp_path)
    wanted = [*requests(template, 3), BuildRequest(IDS[5], alien_genome())]
    with pytest.raises(BuildError, match=IDS[5]):
        make_agents(workspace, template, wanted, label="init", generation=0,
                    all_or_nothing=True)
    assert list(workspace.agents_dir.iterdir()) == []
    assert list(workspace.staging_dir.iterdir()) == []
