"""Shared fixtures: small real templates on disk and their catalogues."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from evolve_ai.core.catalogue import Catalogue, build_catalogue
from evolve_ai.services import template as template_service
from evolve_ai.testing import MINIMAL_RUNTIME, write_template

MODULES = {
    "alpha": "def last(terms):\n    return terms[-1]\n\n\ndef _hidden():\n    pass\n\n\n"
             "def double(terms):\n    return 2 * terms[-1]\n",
    "beta": "def step(terms):\n    return terms[-1] + 1\n",
    "gamma": "X = 1\n",
    "solvers.poly": "def quadratic(terms):\n    return None\n",
}


@pytest.fixture
def open_path() -> Iterator[Path]:
    """A directory other users may pass through, as a deployed workspace's is (pytest's
    own are closed to them): agents of a root orchestrator run as their own uid there."""
    made = Path(tempfile.mkdtemp(prefix="evolve-open-"))
    made.chmod(0o711)
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def template_dir(tmp_path: Path) -> Path:
    directory = write_template(tmp_path / "template", MODULES)
    (directory / "src" / "agent" / "solvers" / "__init__.py").write_text("")
    return directory


def template_files() -> dict[str, bytes]:
    """The same template as ``template_dir``, in memory (for the pure core)."""
    files = {f"src/agent/{name.replace('.', '/')}.py": source.encode()
             for name, source in MODULES.items()}
    files["src/agent/runtime.py"] = MINIMAL_RUNTIME.encode()
    files["src/agent/solvers/__init__.py"] = b""
    return files


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return build_catalogue(template_files())


@pytest.fixture
def disk_catalogue(template_dir: Path) -> Catalogue:
    return template_service.load(template_dir)[1]
