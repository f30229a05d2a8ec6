"""The scan worker on real agent directories built by ``initiate_project``."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest

from evolve_ai.core import genome as g
from evolve_ai.core.catalogue import MAIN_PATH, Catalogue
from evolve_ai.operations.initiate import initiate_project
from evolve_ai.services import template as template_service
from evolve_ai.services.workspace import Workspace
from evolve_ai.testing import write_template
from evolve_ai.workers.scan import ScanContext, ScanInput, ScanResult, pyc_path, scan_agent

MODULES = {
    "alpha": "def last(terms):\n    return terms[-1]\n\n\ndef double(terms):\n"
             "    if terms:\n        return 2 * terms[-1]\n    return None\n",
    "beta": "def first(terms):\n    return terms[0]\n",
}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Workspace, Catalogue, Path]:
    template = write_template(tmp_path / "tpl", MODULES)
    workspace = Workspace(tmp_path / "ws")
    initiate_project(workspace, 1, template=template, seed=1, workers=1)
    catalogue = template_service.load(workspace.template_dir)[1]
    agent = next(p for p in workspace.agents_dir.iterdir())
    return workspace, catalogue, agent


def scan(catalogue: Catalogue, agent: Path, previous: ScanResult | None = None,
         prefix: Path | None = None) -> ScanResult:
    context = ScanContext(catalogue, None if prefix is None else str(prefix))
    return scan_agent(context, ScanInput(
        agent.name, str(agent),
        None if previous is None else previous.genome_hash,
        None if previous is None else previous.code_hash,
        None if previous is None else previous.stats,
    ))


def write_genome(agent: Path, value: object) -> None:
    (agent / "genome.bin").write_bytes(msgpack.packb(value, use_bin_type=True))


def all_on(catalogue: Catalogue) -> dict[str, object]:
    return {"schema": 1, "mutations": 1, "state": {},
            "files": [{"path": e.path, "active": True, "functions": dict.fromkeys(e.functions,
                                                                                  True)}
                      for e in catalogue.files]}


def test_first_scan_then_idle_scan(setup: tuple[Workspace, Catalogue, Path],
                                   tmp_path: Path) -> None:
    _, catalogue, agent = setup
    wiring_before = (agent / MAIN_PATH).stat()
    first = scan(catalogue, agent, prefix=tmp_path / "pycache")
    assert first.outcome == "ok", first.reason
    assert first.rehashed >= 5
    assert first.metrics is not None
    wiring_after = (agent / MAIN_PATH).stat()  # init wrote exactly what the genome says:
    assert (wiring_after.st_ino, wiring_after.st_mtime_ns) == (wiring_before.st_ino,
                                                               wiring_before.st_mtime_ns)
    for path in ("src/agent/runtime.py", MAIN_PATH):
        assert Path(pyc_path(str(tmp_path / "pycache"), str(agent / path))).is_file()
    idle = scan(catalogue, agent, first)
    assert idle.outcome == "ok"
    assert idle.rehashed == 0
    assert idle.code_hash == first.code_hash
    assert not idle.genome_changed and not idle.code_changed
    assert idle.metrics is None  # nothing to recompute


def test_a_new_genome_is_validated_synced_and_hashed(setup: tuple[Workspace, Catalogue, Path]
                                                     ) -> None:
    _, catalogue, agent = setup
    first = scan(catalogue, agent)
    write_genome(agent, all_on(catalogue))
    before = (agent / "genome.bin").read_bytes()
    changed = scan(catalogue, agent, first)
    assert changed.outcome == "ok"
    assert changed.genome_changed and changed.code_changed
    assert changed.genome is not None
    assert g.decode(changed.genome, catalogue).mutations == 1
    assert (agent / "genome.bin").read_bytes() == before  # never rewritten by the scan
    main = (agent / MAIN_PATH).read_text()
    assert '"alpha.double": alpha.double' in main and '"beta.first": beta.first' in main
    assert changed.metrics is not None and changed.metrics.active_functions == 3
    again = scan(catalogue, agent, changed)
    assert (again.rehashed, again.genome_changed, again.code_changed) == (0, False, False)


def test_edited_wiring_is_put_back(setup: tuple[Workspace, Catalogue, Path]) -> None:
    _, catalogue, agent = setup
    first = scan(catalogue, agent)
    original = (agent / MAIN_PATH).read_bytes()
    (agent / MAIN_PATH).write_text("import os\nos.system('rm -rf /')\n")
    result = scan(catalogue, agent, first)
    assert result.outcome == "ok"
    assert (agent / MAIN_PATH).read_bytes() == original
    assert result.code_hash == first.code_hash


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda a: (a / "src/agent/alpha.py").write_text("def last(t):\n    return 0\n"),
         "tampered: src/agent/alpha.py differs from the template"),
        (lambda a: (a / "src/agent/alpha.py").unlink(), "tampered: src/agent/alpha.py is missing"),
        (lambda a: (a / "src/sitecustomize.py").write_text("print('pwned')\n"),
         "tampered: unexpected file src/sitecustomize.py"),
        (lambda a: (a / "src/agent/evil.py").write_text("x = 1\n"),
         "tampered: unexpected file src/agent/evil.py"),
        (lambda a: os.symlink("/etc/passwd", a / "src/agent/link.py"),
         "tampered: src/agent/link.py is a symbolic link"),
        (lambda a: os.mkfifo(a / "src/agent/fifo.py"),
         "tampered: src/agent/fifo.py is not a regular file"),
    ],
)
def test_tampered_code_is_quarantined_and_left_as_is(
        setup: tuple[Workspace, Catalogue, Path], tamper: object, reason: str) -> None:
    _, catalogue, agent = setup
    first = scan(catalogue, agent)
    tamper(agent)  # type: ignore[operator]
    result = scan(catalogue, agent, first)
    assert (result.outcome, result.reason) == ("quarantined", reason)


@pytest.mark.parametrize(
    ("genome", "reason"),
    [
        (b"\x00garbage", "invalid genome: not a msgpack genome"),
        (b"", "invalid genome: not a msgpack genome"),
        (msgpack.packb({"schema": 1, "files": [{"path": "../../x.py", "active": True}]}),
         "escapes the agent directory"),
        (msgpack.packb({"schema": 1, "files": [{"path": "src/agent/alpha.py", "active": True,
                                                "functions": {"os.system": True}}]}),
         "is not a function of"),
        (b"\x91" * 300_000, "over 262144 bytes"),
    ],
)
def test_hostile_genomes_are_quarantined_and_untouched(
        setup: tuple[Workspace, Catalogue, Path], genome: bytes, reason: str) -> None:
    _, catalogue, agent = setup
    first = scan(catalogue, agent)
    (agent / "genome.bin").write_bytes(genome)
    result = scan(catalogue, agent, first)
    assert result.outcome == "quarantined"
    assert result.reason is not None and reason in result.reason
    assert (agent / "genome.bin").read_bytes() == genome


def test_genome_as_a_symlink_is_not_followed(setup: tuple[Workspace, Catalogue, Path]) -> None:
    _, catalogue, agent = setup
    (agent / "genome.bin").unlink()
    os.symlink("/etc/passwd", agent / "genome.bin")
    result = scan(catalogue, agent)
    assert result.outcome == "quarantined"
    assert result.reason == "tampered: genome.bin is not a regular file"


def test_missing_directory_is_quarantined(setup: tuple[Workspace, Catalogue, Path],
                                          tmp_path: Path) -> None:
    _, catalogue, _ = setup
    result = scan(catalogue, tmp_path / "nowhere")
    assert (result.outcome, result.reason) == ("quarantined", "agent directory is missing")


def test_a_module_that_does_not_compile_disables_the_agent(tmp_path: Path) -> None:
    template = write_template(tmp_path / "tpl", {
        **MODULES, "broken": "def f(terms):\n    return 1\n\n\nreturn 2\n"})
    workspace = Workspace(tmp_path / "ws")
    initiate_project(workspace, 1, template=template, seed=1, workers=1)
    catalogue = template_service.load(workspace.template_dir)[1]
    agent = next(p for p in workspace.agents_dir.iterdir())
    write_genome(agent, all_on(catalogue))
    result = scan(catalogue, agent)
    assert result.outcome == "disabled"
    assert result.reason is not None
    assert result.reason.startswith("build failed: src/agent/broken.py:5")


def test_a_link_planted_at_the_wiring_temp_name_is_not_followed(
        setup: tuple[Workspace, Catalogue, Path], tmp_path: Path) -> None:
    _, catalogue, agent = setup
    first = scan(catalogue, agent)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    main = agent / MAIN_PATH
    main.write_text("# edited by the agent\n")
    os.symlink(victim, main.with_name(f".{main.name}.{os.getpid()}.tmp"))
    result = scan(catalogue, agent, first)
    assert victim.read_text() == "precious"
    assert result.outcome == "quarantined"
    # caught by the tree walk; atomic_write's O_NOFOLLOW covers a link planted after it
    assert result.reason == f"tampered: src/agent/.main.py.{os.getpid()}.tmp is a symbolic link"


def test_in_place_rewrite_keeping_size_inode_and_mtime_is_seen(
        setup: tuple[Workspace, Catalogue, Path]) -> None:
    """An agent rewrites genome.bin in place, same length, then puts its mtime back: the
    stat fast path must not trust the old digest (ctime cannot be put back)."""
    _, catalogue, agent = setup
    first = scan(catalogue, agent)
    path = agent / "genome.bin"
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size; a byte the decoder will now refuse or read anew
    with path.open("r+b") as handle:  # in place: same inode
        handle.write(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (
        before.st_size, before.st_ino, before.st_mtime_ns)
    again = scan(catalogue, agent, first)
    assert again.rehashed >= 1
    assert again.outcome != "ok" or again.genome_hash != first.genome_hash


@pytest.mark.parametrize(("files", "size", "reason"), [
    (40, 0, "over 30 files"),
    (1, 3 << 20, "bytes"),
], ids=["files", "bytes"])
def test_a_directory_over_its_budget_disables_the_agent(
        setup: tuple[Workspace, Catalogue, Path], files: int, size: int, reason: str) -> None:
    """Whatever an agent writes in its own directory counts; past the budget it stops."""
    _, catalogue, agent = setup
    within = ScanContext(catalogue, None, disk_bytes=2 << 20, files=30)
    first = scan_agent(within, ScanInput(agent.name, str(agent), None, None, None))
    assert first.outcome == "ok", first.reason  # the template itself is within
    junk = agent / "junk"
    junk.mkdir()
    for n in range(files):
        (junk / f"{n}.bin").write_bytes(os.urandom(size) if size else b"x")
    over = scan_agent(within, ScanInput(agent.name, str(agent), first.genome_hash,
                                        first.code_hash, first.stats))
    assert over.outcome == "disabled"
    assert over.reason is not None and reason in over.reason
    unlimited = ScanContext(catalogue, None)
    assert scan_agent(unlimited, ScanInput(agent.name, str(agent), None, None,
                                           None)).outcome == "ok"


def test_a_directory_too_deep_to_measure_disables_the_agent(
        setup: tuple[Workspace, Catalogue, Path]) -> None:
    """Made with relative mkdirs, a path past PATH_MAX: refused, never a crash of the scan."""
    _, catalogue, agent = setup
    context = ScanContext(catalogue, None, disk_bytes=64 << 20, files=1000)
    fd = os.open(agent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):
            os.mkdir("d" * 250, dir_fd=fd)
            inner = os.open("d" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    result = scan_agent(context, ScanInput(agent.name, str(agent), None, None, None))
    assert result.outcome == "disabled"
    assert result.reason is not None and "cannot be measured" in result.reason
