from __future__ import annotations

from pathlib import Path

import pytest

from evolve_ai.core.catalogue import Catalogue, build_catalogue
from evolve_ai.errors import TemplateError
from evolve_ai.services.template import read_template
from evolve_ai.testing import MINIMAL_RUNTIME


def test_evolvable_files_and_public_functions_in_source_order(catalogue: Catalogue) -> None:
    assert [(e.path, e.module, e.functions) for e in catalogue.files] == [
        ("src/agent/alpha.py", "alpha", ("last", "double")),
        ("src/agent/beta.py", "beta", ("step",)),
        ("src/agent/gamma.py", "gamma", ()),
        ("src/agent/solvers/poly.py", "solvers.poly", ("quadratic",)),
    ]
    assert [e.path for e in catalogue.core] == ["src/agent/runtime.py"]
    assert catalogue.entry == "runtime"
    assert catalogue.gene_count == 4


def test_manifest_covers_business_files_only(catalogue: Catalogue) -> None:
    paths = [path for path, _ in catalogue.manifest]
    assert "pyproject.toml" not in paths
    assert "src/agent/solvers/__init__.py" in paths
    assert "src/agent/runtime.py" in paths
    assert paths == sorted(paths)


def test_wiring_files_in_the_template_are_ignored(template_dir: Path,
                                                  disk_catalogue: Catalogue) -> None:
    package = template_dir / "src" / "agent"
    (package / "__init__.py").write_text("raise SystemExit('never imported')\n")
    (package / "main.py").write_text("def main(registry):\n    return 0\n")
    again = build_catalogue(read_template(template_dir))
    assert again == disk_catalogue


def test_fingerprint_follows_content(template_dir: Path, disk_catalogue: Catalogue) -> None:
    (template_dir / "src" / "agent" / "beta.py").write_text("def step(terms):\n    return 0\n")
    assert build_catalogue(read_template(template_dir)).fingerprint != disk_catalogue.fingerprint
    (template_dir / "README.md").write_text("a file outside src/ counts too")
    assert build_catalogue(read_template(template_dir)).fingerprint != disk_catalogue.fingerprint


def test_disk_and_memory_templates_agree(disk_catalogue: Catalogue,
                                         catalogue: Catalogue) -> None:
    assert disk_catalogue.files == catalogue.files
    assert disk_catalogue.manifest == catalogue.manifest


def test_template_code_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    files = {
        "src/agent/runtime.py": MINIMAL_RUNTIME.encode(),
        "src/agent/evil.py": f"open({str(marker)!r}, 'w').write('x')\ndef f(t):\n    return 1\n"
                             .encode(),
    }
    catalogue = build_catalogue(files)
    assert catalogue.files[0].functions == ("f",)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"src/agent/runtime.py": MINIMAL_RUNTIME, "src/agent/bad.py": "def f(:\n"},
         "src/agent/bad.py:1: syntax error"),
        ({"src/agent/runtime.py": MINIMAL_RUNTIME, "src/agent/x.py": "a = 1\n\nif:\n"},
         "src/agent/x.py:3"),
        ({"src/agent/runtime.py": MINIMAL_RUNTIME, "src/agent/my-mod.py": "x = 1\n"},
         "'my-mod' is not a valid Python module name"),
        ({"src/agent/a.py": "def f(t):\n    return 1\n"}, "found: none"),
        ({"src/agent/runtime.py": MINIMAL_RUNTIME, "src/agent/rt2.py": MINIMAL_RUNTIME},
         "found: rt2, runtime"),
        ({"README.md": "hi"}, "no Python module under src/agent/"),
        ({"src/agent/runtime.py": MINIMAL_RUNTIME, "src/agent/nul.py": "x = 1\0\n"},
         "src/agent/nul.py"),
        ({"src/agent/runtime.py": MINIMAL_RUNTIME, "src/agent/a__b.py": "",
          "src/agent/a/b.py": ""}, "wired as 'a__b'"),
    ],
)
def test_unusable_templates_are_refused_with_file_and_line(
    files: dict[str, str], message: str
) -> None:
    with pytest.raises(TemplateError, match=None) as info:
        build_catalogue({path: text.encode() for path, text in files.items()})
    assert message in str(info.value)


def test_plain_form_lists_every_gene(catalogue: Catalogue) -> None:
    plain = catalogue.to_plain()
    assert plain["schema"] == 1
    assert plain["files"][0] == {"path": "src/agent/alpha.py", "module": "alpha",
                                 "functions": ["last", "double"]}
    assert plain["entry"] == "runtime"
    assert plain["fingerprint"] == catalogue.fingerprint
