"""The example template of docs/templates.md, extracted and run with the real ``evolve``.

Format of the example in the document: each file is announced by a line that is
exactly ``File: `<relative path>` `` (the path in backquotes), followed, after
optional blank lines, by one fenced code block (```` ```lang ```` ... ```` ``` ````)
holding the file's whole content. Nothing else in the document may use that line
format. Fenced blocks without a ``File:`` line before them are illustrations only.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from evolve_ai.testing import read_events, run_evolve, set_config, status_json

DOC = Path(__file__).resolve().parents[2] / "docs" / "templates.md"
FILE_BLOCK = re.compile(
    r"^File: `(?P<path>[^`\n]+)`[ \t]*\n(?:[ \t]*\n)*"
    r"^```[\w+-]*[ \t]*\n(?P<body>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
EXPECTED_FILES = {
    "pyproject.toml",
    "src/agent/runtime.py",
    "src/agent/arithmetic.py",
    "src/agent/geometric.py",
}


def example_files() -> dict[str, str]:
    """Relative path -> content of every ``File:`` block of docs/templates.md."""
    text = DOC.read_text(encoding="utf-8")
    files: dict[str, str] = {}
    for match in FILE_BLOCK.finditer(text):
        path = match["path"]
        assert path not in files, f"{path} is given twice in {DOC.name}"
        files[path] = match["body"]
    announced = re.findall(r"^File: ", text, re.MULTILINE)
    assert len(announced) == len(files), "a File: line is not followed by a fenced block"
    return files


def write_example(directory: Path) -> Path:
    for relative, content in example_files().items():
        pure = PurePosixPath(relative)
        assert not pure.is_absolute() and ".." not in pure.parts, relative
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    return directory


def agent_logs(root: Path) -> str:
    return "".join(path.read_text(encoding="utf-8", errors="replace")
                   for path in sorted((root / "logs" / "agents").glob("*.log")))


def init_example(tmp_path: Path, count: int) -> Path:
    template = write_example(tmp_path / "template")
    root = tmp_path / "workspace"
    result = run_evolve(root, "init", str(count), "--template", str(template), "--seed", "1")
    assert result.returncode == 0, result.stderr
    return root


def test_the_document_gives_the_whole_example() -> None:
    """The example is exactly a pyproject, one core runtime and two evolvable modules."""
    files = example_files()
    assert set(files) == EXPECTED_FILES
    assert '__evolve__ = "core"' in files["src/agent/runtime.py"]
    assert "def main(registry)" in files["src/agent/runtime.py"]
    for module in ("arithmetic", "geometric"):
        assert "__evolve__" not in files[f"src/agent/{module}.py"]


def test_example_template_runs_one_pass(tmp_path: Path) -> None:
    """init 5 then life-cycle --once: every agent active, answers scored, nothing refused."""
    root = init_example(tmp_path, 5)
    main = next((root / "agents").iterdir()) / "src" / "agent" / "main.py"
    assert "runtime.main(REGISTRY)" in main.read_text(encoding="utf-8")

    result = run_evolve(root, "life-cycle", "--once", "--seed", "1")

    assert result.returncode == 0, result.stderr
    status = status_json(root)
    assert status["counts"] == {"active": 5, "disabled": 0, "quarantined": 0, "dead": 0,
                                "running": 0}
    assert status["fitness"]["max"] is not None
    assert 0.0 <= status["fitness"]["max"] <= 1.0
    assert "Traceback" not in agent_logs(root)


def test_example_genetics_rewrite_valid_genomes(tmp_path: Path) -> None:
    """Over a few generations the agents mutate themselves and no genome is refused."""
    root = init_example(tmp_path, 5)
    set_config(root, {"population.size": 5, "lifecycle.interval": 0.1, "selection.every": 4})

    result = run_evolve(root, "life-cycle", "--generations", "3", "--seed", "1")

    assert result.returncode == 0, result.stderr
    status = status_json(root)
    assert status["counts"]["active"] == 5
    assert status["counts"]["quarantined"] == 0
    assert status["counts"]["disabled"] == 0
    assert [row["generation"] for row in status["history"]] == [0, 1, 2, 3]
    assert read_events(root, "mutated")
    assert "Traceback" not in agent_logs(root)
