"""Fixtures for the default template's tests (helpers live in template_helpers)."""

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

# The repository root, so that `tests.template.template_helpers` imports
# however pytest was started.
if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.template.template_helpers import Module, build_agent, scan_template


@pytest.fixture(scope="session")
def modules() -> list[Module]:
    return scan_template()


@pytest.fixture
def make_agent(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1_000_000))

    def make(genes: Sequence[str], extra_modules: Mapping[str, str] | None = None) -> Path:
        return build_agent(tmp_path / f"agent-{next(counter)}", genes, extra_modules)

    return make
