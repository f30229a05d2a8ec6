"""The template's catalogue of genes, built by reading source with ``ast`` (never importing it).

A template is handed in as a mapping of relative path -> bytes; the caller does the
reading. The layout rules are those of docs/templates.md, sections 1 to 4: the package
``src/agent/``, the generated wiring ignored, core modules (``__evolve__ = "core"``) and
exactly one entry point ``main``, evolvable modules whose public top-level functions are
genes, support files. The manifest, the digest of every business file (everything under
``src/`` but the wiring), is the reference for integrity checks; the published form is
in docs/protocol.md ("The commons").
"""

from __future__ import annotations

import ast
import dataclasses
import keyword
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evolve_ai.core.fingerprint import hash_bytes, tree_hash
from evolve_ai.errors import TemplateError

PACKAGE = "agent"
PACKAGE_DIR = f"src/{PACKAGE}"
INIT_PATH = f"{PACKAGE_DIR}/__init__.py"
MAIN_PATH = f"{PACKAGE_DIR}/main.py"
WIRING_PATHS = frozenset({INIT_PATH, MAIN_PATH})
CORE_MARKER = "core"
ENTRY_FUNCTION = "main"
CATALOGUE_SCHEMA = 1


@dataclass(frozen=True, slots=True)
class ModuleEntry:
    """One module of the agent package."""

    path: str  # relative to the agent directory, e.g. "src/agent/arithmetic.py"
    module: str  # dotted name inside the package, e.g. "arithmetic" or "solvers.poly"
    functions: tuple[str, ...]  # public top-level functions, in source order

    @property
    def alias(self) -> str:
        """The name the wiring binds this module to (unique within the package)."""
        return self.module.replace(".", "__")


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Everything the orchestrator knows about a template, and nothing it imported."""

    files: tuple[ModuleEntry, ...]  # evolvable modules, sorted by path
    core: tuple[ModuleEntry, ...]  # core modules, sorted by path
    entry: str  # dotted module name of the core module defining main()
    manifest: tuple[tuple[str, str], ...]  # (path, digest) of every business file, sorted
    fingerprint: str  # digest over the manifest and the template's other files
    # Genes other versions of the template have and this one lacks, (path, functions):
    # a genome may still name them (until its agent rewrites it); they are ignored.
    retired: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def gene_count(self) -> int:
        return sum(len(entry.functions) for entry in self.files)

    def genes(self) -> dict[str, tuple[str, ...]]:
        """Evolvable module path -> its function genes."""
        return {entry.path: entry.functions for entry in self.files}

    def retiring(self, known: Mapping[str, Iterable[str]]) -> Catalogue:
        """This catalogue, tolerating the genes of ``known`` (every version's) it lacks."""
        ours = self.genes()
        retired = []
        for path in sorted(known):
            lost = tuple(sorted(set(known[path]) - set(ours.get(path, ()))))
            if lost or path not in ours:
                retired.append((path, lost))
        return dataclasses.replace(self, retired=tuple(retired))

    def to_plain(self) -> dict[str, Any]:
        """A msgpack-friendly map, as published to ``workspace/commons/catalogue.msgpack``."""
        return {
            "schema": CATALOGUE_SCHEMA,
            "package": PACKAGE,
            "files": [{"path": e.path, "module": e.module, "functions": list(e.functions)}
                      for e in self.files],
            "core": [{"path": e.path, "module": e.module, "functions": list(e.functions)}
                     for e in self.core],
            "entry": self.entry,
            "manifest": dict(self.manifest),
            "fingerprint": self.fingerprint,
        }


def build_catalogue(template: Mapping[str, bytes]) -> Catalogue:
    """Catalogue a template given as relative path -> content.

    Raises TemplateError naming the file (and line) that makes the template unusable.
    """
    package_files = {
        path: data for path, data in template.items()
        if path.startswith(PACKAGE_DIR + "/") and path not in WIRING_PATHS
    }
    if not any(path.endswith(".py") for path in package_files):
        raise TemplateError(f"no Python module under {PACKAGE_DIR}/")
    evolvable: list[ModuleEntry] = []
    core: list[ModuleEntry] = []
    entries: list[str] = []
    for path in sorted(package_files):
        if not path.endswith(".py") or path.endswith("/__init__.py"):
            continue
        tree = _parse(path, package_files[path])
        entry = ModuleEntry(path=path, module=_module_name(path), functions=_public_functions(tree))
        if _is_core(tree):
            core.append(entry)
            if ENTRY_FUNCTION in entry.functions:
                entries.append(entry.module)
        else:
            evolvable.append(entry)
    for path in sorted(package_files):
        if path.endswith("/__init__.py"):
            _parse(path, package_files[path])  # support files must compile too
    aliases = [entry.alias for entry in (*evolvable, *core)]
    clash = next((alias for alias in aliases if aliases.count(alias) > 1), None)
    if clash is not None:
        raise TemplateError(f"two modules of {PACKAGE_DIR}/ would both be wired as {clash!r}")
    if len(entries) != 1:
        found = ", ".join(entries) or "none"
        raise TemplateError(
            f"exactly one core module (__evolve__ = {CORE_MARKER!r}) must define "
            f"{ENTRY_FUNCTION}(registry); found: {found}"
        )
    manifest = tuple(sorted(
        (path, hash_bytes(data)) for path, data in template.items()
        if path.startswith("src/") and path not in WIRING_PATHS
    ))
    others = [(path, hash_bytes(data)) for path, data in template.items()
              if not path.startswith("src/") and path not in WIRING_PATHS]
    return Catalogue(
        files=tuple(evolvable),
        core=tuple(core),
        entry=entries[0],
        manifest=manifest,
        fingerprint=tree_hash([*manifest, *others]),
    )


def _parse(path: str, data: bytes) -> ast.Module:
    try:
        return ast.parse(data, filename=path)
    except SyntaxError as exc:
        line = exc.lineno if exc.lineno is not None else 0
        raise TemplateError(f"{path}:{line}: syntax error: {exc.msg}") from None
    except ValueError as exc:  # NUL bytes and the like
        raise TemplateError(f"{path}: cannot be parsed: {exc}") from None


def _module_name(path: str) -> str:
    parts = path[len(PACKAGE_DIR) + 1 : -len(".py")].split("/")
    for part in parts:
        if not part.isidentifier() or keyword.iskeyword(part):
            raise TemplateError(f"{path}: {part!r} is not a valid Python module name")
    return ".".join(parts)


def _public_functions(tree: ast.Module) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for node in tree.body:
        if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and not node.name.startswith("_")):
            names.setdefault(node.name)
    return tuple(names)


def _is_core(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if (
            any(isinstance(t, ast.Name) and t.id == "__evolve__" for t in targets)
            and isinstance(node.value, ast.Constant)
            and node.value.value == CORE_MARKER
        ):
            return True
    return False


def version_diff(old_files: Mapping[str, object], new_files: Mapping[str, object],
                 old_genes: Mapping[str, Iterable[str]], new_genes: Mapping[str, Iterable[str]]
                 ) -> dict[str, list[str]]:
    """What changed from one template version to another: files (path -> content or
    digest) added, removed, changed; genes (``path:function``) added, removed."""
    before = {f"{path}:{name}" for path, names in old_genes.items() for name in names}
    after = {f"{path}:{name}" for path, names in new_genes.items() for name in names}
    return {
        "files_added": sorted(set(new_files) - set(old_files)),
        "files_removed": sorted(set(old_files) - set(new_files)),
        "files_changed": sorted(path for path in set(old_files) & set(new_files)
                                if old_files[path] != new_files[path]),
        "genes_added": sorted(after - before),
        "genes_removed": sorted(before - after),
    }
