"""The names plug-in authors and users import from ``evolve_ai`` itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

import evolve_ai


@pytest.mark.parametrize("name", evolve_ai.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(evolve_ai, name) is not None
    assert name in dir(evolve_ai)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = evolve_ai.Nope


def test_importing_the_package_imports_nothing_heavy() -> None:
    """Names load on first use: ``evolve status`` must not pay for the life cycle."""
    code = ("import sys, evolve_ai; "
            "print(sorted(m for m in sys.modules if m.startswith('evolve_ai.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert loaded.strip() == "[]"
