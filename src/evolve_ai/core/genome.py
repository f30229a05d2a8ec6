"""The genome: model, canonical msgpack codec, strict bounded validation, random generation.

The format, the validation rules and the canonical encoding are those of docs/protocol.md
("The genome"), whose limits are the constants below. Decoding never trusts the bytes:
the size, string, container and depth limits bound the work, and every name must come
from the template's catalogue.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from evolve_ai.core.catalogue import Catalogue, ModuleEntry
from evolve_ai.errors import GenomeError

SCHEMA = 1
MAX_BYTES = 256 * 1024
MAX_STR = 4096
MAX_CONTAINER = 4096
MAX_STATE_DEPTH = 8
MAX_MUTATIONS = 2**63 - 1
TOP_KEYS = frozenset({"schema", "files", "mutations", "state"})
FILE_KEYS = frozenset({"path", "active", "functions"})


@dataclass(frozen=True, slots=True)
class FileGene:
    """One evolvable file: its own switch and one switch per function."""

    path: str
    active: bool
    functions: tuple[tuple[str, bool], ...]  # sorted by name


@dataclass(frozen=True, slots=True)
class Genome:
    """A validated genome; files sorted by path, so equal genomes encode to equal bytes."""

    files: tuple[FileGene, ...]
    mutations: int = 0
    state: Mapping[str, Any] = field(default_factory=dict)

    def expressed(self, catalogue: Catalogue) -> tuple[tuple[ModuleEntry, tuple[str, ...]], ...]:
        """Active modules with their expressed functions, in catalogue order.

        A function is expressed only if its file is active and its own flag is
        true; a gene missing from the genome is inactive.
        """
        genes = {g.path: g for g in self.files}
        result = []
        for entry in catalogue.files:
            gene = genes.get(entry.path)
            if gene is None or not gene.active:
                continue
            flags = dict(gene.functions)
            result.append((entry, tuple(f for f in entry.functions if flags.get(f, False))))
        return tuple(result)

    def to_plain(self) -> dict[str, Any]:
        """The wire map, with every map's keys in a fixed order."""
        return {
            "schema": SCHEMA,
            "files": [
                {"path": g.path, "active": g.active, "functions": dict(g.functions)}
                for g in self.files
            ],
            "mutations": self.mutations,
            "state": _canonical(self.state),
        }


def encode(genome: Genome) -> bytes:
    """Canonical bytes: the same genome always encodes to the same bytes."""
    data: bytes = msgpack.packb(genome.to_plain(), use_bin_type=True)
    return data


def decode(data: bytes, catalogue: Catalogue) -> Genome:
    """Strictly decode and validate ``data`` against ``catalogue``; GenomeError says why not."""
    if len(data) > MAX_BYTES:
        raise GenomeError(f"genome is {len(data)} bytes, over the {MAX_BYTES}-byte cap")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_STR,
            max_bin_len=MAX_STR,
            max_array_len=MAX_CONTAINER,
            max_map_len=MAX_CONTAINER,
            max_ext_len=0,
        )
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
        raise GenomeError(f"not a msgpack genome: {_short(exc)}") from None
    return from_plain(raw, catalogue)


def from_plain(raw: object, catalogue: Catalogue) -> Genome:
    """Validate an already-decoded map (see ``decode``)."""
    if not isinstance(raw, dict):
        raise GenomeError(f"genome must be a map, got {_kind(raw)}")
    unknown = sorted(str(k) for k in raw if k not in TOP_KEYS)
    if unknown:
        raise GenomeError(f"unknown genome key {unknown[0]!r}")
    schema = raw.get("schema")
    if type(schema) is not int or schema != SCHEMA:
        raise GenomeError(f"schema must be {SCHEMA}, got {schema!r}")
    mutations = raw.get("mutations", 0)
    if type(mutations) is not int or not 0 <= mutations <= MAX_MUTATIONS:
        raise GenomeError(f"mutations must be a non-negative integer, got {_kind(mutations)}")
    state = raw.get("state", {})
    if not isinstance(state, dict):
        raise GenomeError(f"state must be a map, got {_kind(state)}")
    _check_state(state, "state", 1)
    files = raw.get("files")
    if not isinstance(files, list):
        raise GenomeError(f"files must be a list, got {_kind(files)}")
    modules = {entry.path: entry for entry in catalogue.files}
    retired = dict(catalogue.retired)
    genes: dict[str, FileGene] = {}
    for index, item in enumerate(files):
        gene = _file_gene(item, f"files[{index}]", modules, retired)
        if gene.path in genes:
            raise GenomeError(f"files[{index}].path: {gene.path!r} appears twice")
        genes[gene.path] = gene
    return Genome(
        files=tuple(genes[path] for path in sorted(genes)),
        mutations=mutations,
        state=state,
    )


def _file_gene(item: object, where: str, modules: Mapping[str, ModuleEntry],
               retired: Mapping[str, tuple[str, ...]]) -> FileGene:
    """The gene ``item`` describes. Genes of other versions (``retired``) are kept, so
    that the genome encodes as it was written, and never expressed (``expressed``
    reads the catalogue's genes only)."""
    if not isinstance(item, dict):
        raise GenomeError(f"{where} must be a map, got {_kind(item)}")
    unknown = sorted(str(k) for k in item if k not in FILE_KEYS)
    if unknown:
        raise GenomeError(f"{where}: unknown key {unknown[0]!r}")
    path = item.get("path")
    if not isinstance(path, str):
        raise GenomeError(f"{where}.path must be a string, got {_kind(path)}")
    if path.startswith("/") or "\\" in path or ".." in path.split("/") or "\0" in path:
        raise GenomeError(f"{where}.path {path!r} escapes the agent directory")
    entry = modules.get(path)
    lost = retired.get(path, ())
    if entry is None and path not in retired:
        raise GenomeError(f"{where}.path {path!r} is not an evolvable file of the template")
    active = item.get("active")
    if type(active) is not bool:
        raise GenomeError(f"{where}.active must be a boolean, got {_kind(active)}")
    functions = item.get("functions", {})
    if not isinstance(functions, dict):
        raise GenomeError(f"{where}.functions must be a map, got {_kind(functions)}")
    known = set(entry.functions) if entry is not None else set()
    for name, flag in functions.items():
        if name not in known and name not in lost:
            raise GenomeError(f"{where}.functions: {name!r} is not a function of {path}")
        if type(flag) is not bool:
            raise GenomeError(f"{where}.functions[{name!r}] must be a boolean, got {_kind(flag)}")
    return FileGene(path=path, active=active, functions=tuple(sorted(functions.items())))


def _check_state(value: object, where: str, depth: int) -> None:
    if depth > MAX_STATE_DEPTH:
        raise GenomeError(f"{where}: nested deeper than {MAX_STATE_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise GenomeError(f"{where}: keys must be strings, got {_kind(key)}")
            _check_state(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_state(item, f"{where}[{index}]", depth + 1)
    elif value is not None and not isinstance(value, bool | int | float | str | bytes):
        raise GenomeError(f"{where}: unsupported value of type {_kind(value)}")


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def _kind(value: object) -> str:
    return type(value).__name__


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def random_genome(
    catalogue: Catalogue,
    rng: random.Random,
    *,
    file_rate: float = 0.5,
    function_rate: float = 0.5,
) -> Genome:
    """A genome drawn at random: each file and each function switched on with its rate.

    Every catalogued gene is written out (on or off) so that an agent sees its
    whole genome and can mutate any of it.
    """
    files = tuple(
        FileGene(
            path=entry.path,
            active=rng.random() < file_rate,
            functions=tuple(sorted((name, rng.random() < function_rate)
                                   for name in entry.functions)),
        )
        for entry in catalogue.files
    )
    return Genome(files=files)


def expression(genome: Genome | None, catalogue: Catalogue) -> set[str]:
    """The expressed genes: "path" for each active file, "path:function" for functions."""
    if genome is None:
        return set()
    expressed: set[str] = set()
    for entry, names in genome.expressed(catalogue):
        expressed.add(entry.path)
        expressed.update(f"{entry.path}:{name}" for name in names)
    return expressed


def changed_genes(old: bytes | None, new: bytes, catalogue: Catalogue) -> list[str]:
    """Genes whose expression differs between two encoded genomes (``new`` must be valid)."""
    new_genome = decode(new, catalogue)
    try:
        old_genome = decode(old, catalogue) if old is not None else None
    except GenomeError:
        old_genome = None
    before = expression(old_genome, catalogue)
    after = expression(new_genome, catalogue)
    return sorted(gene for gene in before | after if (gene in before) != (gene in after))
