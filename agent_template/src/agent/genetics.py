"""The agent's own genetics: how it changes its genome (docs/templates.md, section 5).

Core module: always active, never a gene. The only writer of `genome.bin` (its format:
docs/protocol.md, "The genome"), and it writes nothing else. The operators
(`flip_functions`, `switch_gene`, `toggle_module`, `recombine`, `uptake`, `adapt_rate`)
are pure functions of a decoded genome and a `random.Random`. `Policy` drives them from
the fitness feedback as a (1+1) evolution strategy: measure, mutate, measure the mutant,
keep it or revert it. The pending trial lives in `state["trial"]`, not only in memory,
because the orchestrator restarts the agent whenever its genome changes: a memory-only
undo would be lost at the very moment it is needed; so does the memory of the mutants
found worse (`state["tried"]`). `mutate`, `restless` and `step` say how a good genome
stays good, and how a population does not settle one switch short of a better one.
"""

import math
import os
import random
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

import msgpack

__evolve__ = "core"

GENOME_FILE = "genome.bin"
CATALOGUE_FILE = "catalogue.msgpack"
ELITE_DIR = "elite"
SCHEMA = 1

# Limits that keep decoding cheap and a genome small whatever is on disk;
# the genome's match the orchestrator's own decoder.
MAX_BYTES = 256 * 1024
MAX_CATALOGUE_BYTES = 1 << 20
MAX_FILES = 256
MAX_FUNCTIONS = 256
MAX_NAME = 200
MAX_STATE_DEPTH = 8
MAX_PEERS = 256

INITIAL_RATE = 0.1
MIN_RATE = 0.02
MAX_RATE = 0.5
# One-fifth rule: four failures undo one success, so the rate settles where
# about one mutation in five helps.
SUCCESS_FACTOR = 1.5
FAILURE_FACTOR = SUCCESS_FACTOR**-0.25
RECOMBINATION_CHANCE = 0.2
TOGGLE_CHANCE = 0.2
SWITCH_CHANCE = 0.5  # of the mutations that are neither crossover nor toggle
SWAP_CHANCE = 0.5  # of the switches that silence a gene: a sibling is expressed instead
# Draws of an operator before giving up on changing the expressed genes.
MUTATION_ATTEMPTS = 16
# Trials in a row without improvement after which the resting odds stop falling.
MAX_FAILS = 8
# How much better than its baseline a mutant must measure to be kept.
MARGIN = 0.01
REST_POWER = 2
# A mutant this far below its baseline after this many feedbacks is reverted
# at once: most mutants of a good genome express a decoy and score near 0,
# and every pass spent measuring one is a pass of bad answers. Two feedbacks
# rest on a variant's first 32 tasks at the default evaluation, the first 16
# counted twice (each feedback is the fitness over the last 64 scores):
# standard error about 0.09.
EARLY_FEEDBACKS = 2
EARLY_DROP = 0.15
# The neighbourhood memory: mutants measured clearly worse than the genome they came
# from are not drawn again from its expression, and an agent rests only once every
# genome one switch away is known to be worse (its own trials and its elite peers').
# A mutant within noise of its baseline is not remembered: it may be tried again,
# which is how a population crosses a plateau to a better genome behind it.
CLEARLY_WORSE = 0.02
MAX_TRIED = 128


class FileGene(TypedDict):
    path: str
    active: bool
    functions: dict[str, bool]


class Genome(TypedDict):
    schema: int
    files: list[FileGene]
    mutations: int
    state: dict[str, Any]


# path -> names of its function genes
Catalogue = dict[str, tuple[str, ...]]
# (path, function name or None for the module's own flag, value to restore)
Change = tuple[str, str | None, bool]


# --- validation and codec -------------------------------------------------


def valid_path(path: object) -> bool:
    """A relative POSIX path to a .py file, never escaping the agent directory."""
    if not isinstance(path, str) or not 0 < len(path) <= MAX_NAME or "\\" in path:
        return False
    parts = PurePosixPath(path).parts
    return not path.startswith("/") and ".." not in parts and path.endswith(".py")


def valid_name(name: object) -> bool:
    """A public function name (private helpers are never genes)."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME
        and name.isidentifier()
        and not name.startswith("_")
    )


def _is_plain(value: object, depth: int = 1) -> bool:
    """msgpack-safe data with string keys, shallow enough to encode canonically."""
    if depth > MAX_STATE_DEPTH:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain(item, depth + 1) for item in value)
    return value is None or isinstance(value, bool | int | float | str | bytes)


def _file_gene(raw: object) -> FileGene | None:
    if not isinstance(raw, dict):
        return None
    path, active, functions = raw.get("path"), raw.get("active"), raw.get("functions")
    if not valid_path(path) or not isinstance(active, bool) or not isinstance(functions, dict):
        return None
    if len(functions) > MAX_FUNCTIONS:
        return None
    if not all(valid_name(k) and isinstance(v, bool) for k, v in functions.items()):
        return None
    return FileGene(path=str(path), active=active, functions=dict(functions))


def genome_from(raw: object) -> Genome | None:
    """Validate a decoded msgpack value as a genome; None when it is not one."""
    if not isinstance(raw, dict) or type(raw.get("schema")) is not int:
        return None
    files, mutations, state = raw.get("files"), raw.get("mutations", 0), raw.get("state", {})
    if raw["schema"] != SCHEMA or not isinstance(files, list) or len(files) > MAX_FILES:
        return None
    if type(mutations) is not int or mutations < 0 or not isinstance(state, dict):
        return None
    genes = [_file_gene(item) for item in files]
    checked = [gene for gene in genes if gene is not None]
    if len(checked) != len(genes) or len({g["path"] for g in checked}) != len(checked):
        return None
    if not _is_plain(state):
        return None
    return _genome(checked, mutations, state)


def _genome(files: Iterable[FileGene], mutations: int, state: dict[str, Any]) -> Genome:
    """A genome in canonical order: files by path, functions by name."""
    ordered = [
        FileGene(path=f["path"], active=f["active"], functions=dict(sorted(f["functions"].items())))
        for f in sorted(files, key=lambda f: f["path"])
    ]
    return Genome(schema=SCHEMA, files=ordered, mutations=mutations, state=state)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def encode_genome(genome: Genome) -> bytes:
    """Canonical bytes: the same genome always encodes to the same bytes."""
    ordered = _genome(genome["files"], genome["mutations"], _canonical(genome["state"]))
    payload = {
        "schema": ordered["schema"],
        "files": [dict(f) for f in ordered["files"]],
        "mutations": ordered["mutations"],
        "state": ordered["state"],
    }
    return msgpack.packb(payload, use_bin_type=True)


def _unpack(data: bytes) -> object:
    """msgpack decoding of already size-capped bytes; None on anything malformed."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:  # msgpack raises a zoo of types on garbage; all mean "no"
        return None


def decode_genome(data: bytes) -> Genome | None:
    if len(data) > MAX_BYTES:
        return None
    return genome_from(_unpack(data))


# --- files -------------------------------------------------------------------


def read_bounded(path: Path, limit: int = MAX_BYTES) -> bytes | None:
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def read_genome(path: Path) -> Genome | None:
    data = read_bounded(path)
    return None if data is None else decode_genome(data)


def write_genome(path: Path, genome: Genome) -> None:
    """Replace `path` atomically: readers see the old genome or the new one, never half."""
    data = encode_genome(genome)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; best effort where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def read_catalogue(commons: Path | None) -> Catalogue:
    """Genes published in the commons; {} when it is missing or garbled."""
    if commons is None:
        return {}
    data = read_bounded(commons / CATALOGUE_FILE, MAX_CATALOGUE_BYTES)
    raw = None if data is None else _unpack(data)
    entries = raw.get("files") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or len(entries) > MAX_FILES:
        return {}
    catalogue: Catalogue = {}
    for entry in entries:
        names = entry.get("functions") if isinstance(entry, dict) else None
        path = entry.get("path") if isinstance(entry, dict) else None
        if not valid_path(path) or not isinstance(names, list) or len(names) > MAX_FUNCTIONS:
            return {}
        if not all(valid_name(name) for name in names):
            return {}
        catalogue[str(path)] = tuple(names)
    return catalogue


def read_peer(commons: Path | None, rng: random.Random) -> Genome | None:
    """One published elite genome, chosen at random; None when there is none."""
    if commons is None:
        return None
    try:
        candidates = sorted(islice((commons / ELITE_DIR).glob("*.bin"), MAX_PEERS))
    except OSError:
        return None
    return read_genome(rng.choice(candidates)) if candidates else None


# --- operators (pure) --------------------------------------------------------


def _files(genome: Genome) -> dict[str, FileGene]:
    """Deep-enough copies of the file genes, by path, safe to modify."""
    return {
        f["path"]: FileGene(path=f["path"], active=f["active"], functions=dict(f["functions"]))
        for f in genome["files"]
    }


def _with_files(genome: Genome, files: Iterable[FileGene]) -> Genome:
    return _genome(files, genome["mutations"], dict(genome["state"]))


def _with_state(genome: Genome, mutated: bool = False, **updates: Any) -> Genome:
    """Copy with state keys replaced (a value of None removes the key)."""
    state = {k: v for k, v in {**genome["state"], **updates}.items() if v is not None}
    mutations = genome["mutations"] + (1 if mutated else 0)
    return _genome(_files(genome).values(), mutations, state)


def allowed_genes(genome: Genome, catalogue: Catalogue) -> dict[str, frozenset[str]]:
    """Every (path, function) this agent may ever carry: its own and the catalogue's."""
    allowed = {path: set(names) for path, names in catalogue.items()}
    for gene in genome["files"]:
        allowed.setdefault(gene["path"], set()).update(gene["functions"])
    return {path: frozenset(names) for path, names in allowed.items()}


def uptake(genome: Genome, catalogue: Catalogue) -> Genome:
    """Add catalogued genes missing from the genome, switched off (so it is neutral)."""
    files = _files(genome)
    for path, names in sorted(catalogue.items()):
        if path not in files and len(files) >= MAX_FILES:
            continue
        gene = files.setdefault(path, FileGene(path=path, active=False, functions={}))
        for name in names:
            if len(gene["functions"]) < MAX_FUNCTIONS:
                gene["functions"].setdefault(name, False)
    return _with_files(genome, files.values())


def flip_functions(genome: Genome, rng: random.Random, rate: float) -> Genome:
    """Flip each function flag with probability `rate`, and at least one."""
    files = _files(genome)
    flags = [(gene, name) for gene in files.values() for name in gene["functions"]]
    if not flags:
        return genome
    chosen = [flag for flag in flags if rng.random() < rate] or [rng.choice(flags)]
    for gene, name in chosen:
        gene["functions"][name] = not gene["functions"][name]
    return _with_files(genome, files.values())


def switch_gene(genome: Genome, rng: random.Random) -> Genome:
    """Express or silence one function gene, and no other.

    A bit flip inside an inactive module changes nothing expressed, and
    switching the module on expresses whatever its other flags say (a decoy,
    often): a gene that is only good alone in its module, behind a shadowing
    sibling, is out of reach of both. Here the chosen function is silenced if
    expressed (and, with probability SWAP_CHANCE, a silent sibling of its
    module expressed instead: siblings that shadow each other are exchanged
    in one step); otherwise it is switched on, and, when its module was off,
    the module too with its other functions off.
    """
    files = _files(genome)
    genes = [(gene, name) for gene in files.values() for name in gene["functions"]]
    if not genes:
        return genome
    gene, name = rng.choice(genes)
    if gene["active"] and gene["functions"][name]:
        gene["functions"][name] = False
        silent = [other for other, on in gene["functions"].items() if not on and other != name]
        if silent and rng.random() < SWAP_CHANCE:
            # a swap: one sibling takes its place (two genes that shadow each other)
            gene["functions"][rng.choice(silent)] = True
    elif gene["active"]:
        gene["functions"][name] = True
    else:
        gene["active"] = True
        gene["functions"] = {other: other == name for other in gene["functions"]}
    return _with_files(genome, files.values())


def toggle_module(genome: Genome, rng: random.Random) -> Genome:
    """Switch one module on or off, keeping its function flags for later."""
    files = _files(genome)
    if not files:
        return genome
    gene = files[rng.choice(sorted(files))]
    gene["active"] = not gene["active"]
    return _with_files(genome, files.values())


def recombine(
    genome: Genome, peer: Genome, rng: random.Random, allowed: Mapping[str, frozenset[str]]
) -> Genome:
    """Uniform crossover per file: each file comes from either parent, with even odds.

    Only genes in `allowed` survive from the peer, so a peer can never smuggle
    in a path or function this agent's template does not have.
    """
    own = _files(genome)
    theirs = {path: gene for path, gene in _files(peer).items() if path in allowed}
    child: list[FileGene] = []
    for path in sorted(own.keys() | theirs.keys()):
        take_theirs = path in theirs and rng.random() < 0.5
        if take_theirs:
            child.append(_adopt(theirs[path], own.get(path), allowed[path]))
        elif path in own:
            child.append(own[path])
    return _with_files(genome, child)


def _adopt(theirs: FileGene, mine: FileGene | None, allowed: frozenset[str]) -> FileGene:
    """The peer's file gene, restricted to allowed names, keeping every name we had."""
    names = set(mine["functions"] if mine else ()) | (theirs["functions"].keys() & allowed)
    flags = {name: theirs["functions"].get(name, False) for name in sorted(names)}
    return FileGene(path=theirs["path"], active=theirs["active"], functions=flags)


def current_rate(genome: Genome) -> float:
    rate = genome["state"].get("rate")
    if isinstance(rate, float) and MIN_RATE <= rate <= MAX_RATE:
        return rate
    return INITIAL_RATE


def adapt_rate(rate: float, success: bool) -> float:
    """One-fifth rule step, clamped to [MIN_RATE, MAX_RATE]."""
    factor = SUCCESS_FACTOR if success else FAILURE_FACTOR
    return min(MAX_RATE, max(MIN_RATE, rate * factor))


def _flags(genome: Genome) -> dict[tuple[str, str | None], bool]:
    flags: dict[tuple[str, str | None], bool] = {}
    for gene in genome["files"]:
        flags[gene["path"], None] = gene["active"]
        for name, on in gene["functions"].items():
            flags[gene["path"], name] = on
    return flags


def changes(before: Genome, after: Genome) -> list[Change]:
    """The undo list taking `after` back to `before` (a flag absent before was off)."""
    old = _flags(before)
    return [
        (path, name, old.get((path, name), False))
        for (path, name), value in _flags(after).items()
        if old.get((path, name), False) != value
    ]


def apply_changes(genome: Genome, undo: Iterable[Change]) -> Genome:
    """Set the listed flags; entries naming genes the genome lacks are skipped."""
    files = _files(genome)
    for path, name, value in undo:
        gene = files.get(path)
        if gene is None:
            continue
        if name is None:
            gene["active"] = value
        elif name in gene["functions"]:
            gene["functions"][name] = value
    return _with_files(genome, files.values())


# --- the feedback-driven policy ---------------------------------------------


class Trial:
    """A mutation under judgement: fitness before it, and how to undo it."""

    # A plain class, not a dataclass: every agent start pays for building its
    # methods with exec (about 1 ms of a 2 ms start, measured in the fork server).
    __slots__ = ("baseline", "owner", "undo")

    def __init__(self, baseline: float, undo: tuple[Change, ...], owner: str = "") -> None:
        self.baseline = baseline
        self.undo = undo
        self.owner = owner  # the agent id that started it ("" outside the life cycle)

    def _key(self) -> tuple[float, tuple[Change, ...], str]:
        return self.baseline, self.undo, self.owner

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trial) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Trial(baseline={self.baseline!r}, undo={self.undo!r}, owner={self.owner!r})"

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"baseline": self.baseline,
                                 "undo": [list(change) for change in self.undo]}
        if self.owner:
            state["owner"] = self.owner
        return state

    @staticmethod
    def from_state(raw: object) -> "Trial | None":
        if not isinstance(raw, dict):
            return None
        baseline, undo, owner = raw.get("baseline"), raw.get("undo"), raw.get("owner", "")
        if not isinstance(baseline, float) or not isinstance(undo, list):
            return None
        if not isinstance(owner, str):
            return None
        parsed = [_change(item) for item in undo]
        if any(item is None for item in parsed):
            return None
        return Trial(baseline, tuple(item for item in parsed if item is not None), owner)


def _change(raw: object) -> Change | None:
    if not isinstance(raw, list) or len(raw) != 3:
        return None
    path, name, value = raw
    if not isinstance(path, str) or not isinstance(value, bool):
        return None
    if name is not None and not isinstance(name, str):
        return None
    return path, name, value


def expression(genome: Genome) -> frozenset[tuple[str, str]]:
    """The expressed functions: (path, name) with the file active and the flag on."""
    return frozenset(
        (gene["path"], name)
        for gene in genome["files"]
        if gene["active"]
        for name, on in gene["functions"].items()
        if on
    )


def current_fails(genome: Genome) -> int:
    fails = genome["state"].get("fails")
    return min(fails, MAX_FAILS) if type(fails) is int and fails >= 0 else 0


def _draw(base: Genome, rng: random.Random, rate: float, peer: Genome | None,
          catalogue: Catalogue) -> Genome:
    if peer is not None and rng.random() < RECOMBINATION_CHANCE:
        return recombine(base, peer, rng, allowed_genes(base, catalogue))
    if rng.random() < TOGGLE_CHANCE:
        return toggle_module(base, rng)
    if rng.random() < SWITCH_CHANCE:
        return switch_gene(base, rng)
    return flip_functions(base, rng, rate)


def mutate(
    genome: Genome,
    rng: random.Random,
    baseline: float,
    catalogue: Catalogue,
    *,
    peer: Genome | None = None,
    owner: str = "",
) -> Genome | None:
    """A mutant of `genome` that expresses something else and is not known to be worse,
    its trial recorded; None if no draw found one (a peer identical to us changes
    nothing, a neighbourhood can be spent)."""
    base = uptake(genome, catalogue)
    rate = current_rate(base)
    expressed = expression(base)
    known = tried(base)
    for _ in range(MUTATION_ATTEMPTS):
        child = _draw(base, rng, rate, peer, catalogue)
        if expression(child) != expressed and expression_key(child) not in known:
            return _trial(base, child, baseline, owner)
    fresh = [move for key, move in neighbours(base).items() if key not in known]
    return _trial(base, moved(base, rng.choice(fresh)), baseline, owner) if fresh else None


def _trial(base: Genome, child: Genome, baseline: float, owner: str) -> Genome:
    trial = Trial(baseline, tuple(changes(base, child)), owner)
    return _with_state(child, mutated=True, trial=trial.to_state())


# --- the neighbourhood memory ---------------------------------------------------


def _key_of(expressed: Iterable[tuple[str, str]]) -> int:
    return zlib.crc32("\n".join(sorted(f"{path}:{name}" for path, name in expressed)).encode())


def expression_key(genome: Genome) -> int:
    """A stable 32-bit name for what a genome expresses (the same in every process)."""
    return _key_of(expression(genome))


def _memory(genome: Genome) -> list[int]:
    """The remembered keys, oldest first; [] when remembered for another expression
    (it says nothing of this one) or garbled."""
    raw = genome["state"].get("tried")
    if not isinstance(raw, dict) or raw.get("at") != expression_key(genome):
        return []
    moves = raw.get("moves")
    if not isinstance(moves, list):
        return []
    return [move for move in moves[-MAX_TRIED:] if type(move) is int]


def tried(genome: Genome) -> frozenset[int]:
    """Expression keys of the mutants known to be worse than this genome's expression."""
    return frozenset(_memory(genome))


def _remember(genome: Genome, moves: Iterable[int]) -> Genome:
    """`genome` with `moves` added to what is known worse than its expression; the
    newest MAX_TRIED kept."""
    kept = list(dict.fromkeys([*_memory(genome), *moves]))[-MAX_TRIED:]
    return _with_state(genome, tried={"at": expression_key(genome), "moves": kept})


def pooled(genome: Genome, peer: Genome | None) -> Genome:
    """What an elite peer with the same expression found worse, learnt too: a population
    sweeps one neighbourhood together instead of once per lineage."""
    if peer is None or expression(peer) != expression(genome):
        return genome
    theirs = tried(peer)
    return genome if theirs <= tried(genome) else _remember(genome, _memory(peer))


# A move: one module's new switch and function flags.
Move = tuple[str, bool, dict[str, bool]]


def neighbours(genome: Genome) -> dict[int, Move]:
    """Every move one switch away, by the expression key it leads to: a function gene
    expressed (its module switched on with it alone if it was off) or silenced, two
    siblings of a module swapped, a module toggled. Only moves that change the
    expression; keys are computed from expressions alone (no genome is built)."""
    found: dict[int, Move] = {}
    own = expression(genome)
    own_key = _key_of(own)

    def offer(path: str, active: bool, functions: dict[str, bool]) -> None:
        others = {gene for gene in own if gene[0] != path}
        if active:
            others.update((path, name) for name, on in functions.items() if on)
        key = _key_of(others)
        if key != own_key:
            found.setdefault(key, (path, active, functions))

    for gene in genome["files"]:
        path, flags = gene["path"], gene["functions"]
        offer(path, not gene["active"], dict(flags))
        for name, on in flags.items():
            if not gene["active"]:
                offer(path, True, {other: other == name for other in flags})
            elif on:
                offer(path, True, {**flags, name: False})
                for other, other_on in flags.items():
                    if not other_on:
                        offer(path, True, {**flags, name: False, other: True})
            else:
                offer(path, True, {**flags, name: True})
    return found


def moved(genome: Genome, move: Move) -> Genome:
    """`genome` after one of its `neighbours` moves."""
    path, active, functions = move
    files = _files(genome)
    files[path] = FileGene(path=path, active=active, functions=dict(functions))
    return _with_files(genome, files.values())


def spent(genome: Genome) -> bool:
    """Whether every neighbour is known to be worse (or the memory is full): the agent
    may rest."""
    known = tried(genome)
    return len(known) >= MAX_TRIED or all(key in known for key in neighbours(genome))


def novel(genome: Genome, catalogue: Catalogue) -> list[tuple[str, str]]:
    """Catalogued function genes this genome has never carried: genes a newer version of
    the template brought (a person's, or an invention the orchestrator published)."""
    carried = {(gene["path"], name) for gene in genome["files"] for name in gene["functions"]}
    return sorted((path, name) for path, names in catalogue.items() for name in names
                  if (path, name) not in carried)


def try_novel(genome: Genome, rng: random.Random, baseline: float, catalogue: Catalogue,
              owner: str = "") -> Genome | None:
    """Express one novel gene, chosen at random, as a trial like any mutation; every
    other novel gene is taken in switched off. So each new gene is tried once by the
    agents alive when it appears (selection then decides), however long their rest;
    None when nothing is novel."""
    fresh = novel(genome, catalogue)
    if not fresh:
        return None
    path, name = rng.choice(fresh)
    base = uptake(genome, catalogue)
    files = _files(base)
    gene = files.get(path)
    if gene is None or name not in gene["functions"]:
        return None  # no room for it (MAX_FILES, MAX_FUNCTIONS)
    if gene["active"]:
        gene["functions"][name] = True
    else:  # its module on with it alone: its siblings could be decoys
        gene["active"] = True
        gene["functions"] = {other: other == name for other in gene["functions"]}
    child = _with_files(base, files.values())
    trial = Trial(baseline, tuple(changes(base, child)), owner)
    return _with_state(child, mutated=True, trial=trial.to_state())


def revert(genome: Genome, trial: Trial, score: float | None = None) -> Genome:
    """Undo the trial's mutation, mutate more cautiously, and rest longer from now on;
    a mutant that measured `score` clearly below its baseline is remembered."""
    restored = apply_changes(genome, trial.undo)
    rate = adapt_rate(current_rate(genome), success=False)
    fails = min(MAX_FAILS, current_fails(genome) + 1)
    restored = _with_state(restored, mutated=True, trial=None, rate=rate, fails=fails)
    if score is not None and score < trial.baseline - CLEARLY_WORSE:
        restored = _remember(restored, [expression_key(genome)])
    return restored


def accept(genome: Genome, score: float, trial: Trial) -> Genome:
    """Keep the trial's mutation; a real improvement makes mutation bolder and resets
    the count of fruitless trials, anything less adds to it."""
    rate, fails = current_rate(genome), current_fails(genome)
    if score > trial.baseline:
        rate, fails = adapt_rate(rate, success=True), 0
    else:
        fails = min(MAX_FAILS, fails + 1)
    return _with_state(genome, trial=None, rate=rate, fails=fails)


def restless(genome: Genome, rng: random.Random) -> bool:
    """Whether a measured genome is mutated now: always while some neighbour is not
    known to be worse; then less and less often as trials fail (probability
    1 / (1 + fails) ** REST_POWER)."""
    if not spent(genome):
        return True
    odds: float = (1 + current_fails(genome)) ** REST_POWER
    return rng.random() * odds < 1.0


def step(
    genome: Genome,
    score: float,
    rng: random.Random,
    catalogue: Catalogue,
    *,
    peer: Genome | None = None,
    margin: float = 0.0,
    owner: str = "",
) -> Genome:
    """The policy's decision for a measured `score`: the next genome.

    The next genome may differ from `genome` in its state alone (a trial
    kept, a rest begun): `Policy` then keeps it in memory and writes it with
    the next change of expression. A trial started by another agent (a
    parent's, inherited with its genome) is no trial of ours: this genome is
    simply measured.
    """
    trial = Trial.from_state(genome["state"].get("trial"))
    if trial is not None and trial.owner != owner:
        genome, trial = _with_state(genome, trial=None), None
    if trial is not None:
        if score < trial.baseline + margin:
            # Revert only: the restored genome is measured afresh before the next
            # mutation, so one lucky baseline cannot block progress for ever.
            return revert(genome, trial, score)
        # Kept, and measured as it is until the next decision: a mutant started now
        # would be all that selection sees of this agent, not what it just found.
        return accept(genome, score, trial)
    novelty = try_novel(genome, rng, score, catalogue, owner)
    if novelty is not None:
        return novelty
    genome = pooled(genome, peer)
    if restless(genome, rng):
        if spent(genome):  # a new sweep: noise may have condemned a good neighbour
            genome = _with_state(genome, tried=None)
        mutant = mutate(genome, rng, score, catalogue, peer=peer, owner=owner)
        if mutant is not None:
            return mutant
    return genome


class Policy:
    """Turns fitness feedback into genome rewrites.

    It acts every `patience` feedbacks, on their mean: fitness is noisy.
    With the default evaluation (16 tasks a pass), 8 feedbacks judge each
    variant on its first 128 tasks (the early ones weigh more: a feedback is
    the fitness over the last 64 scores); at 8 tasks a pass noise decides too
    often (measured with bench/evolution.py, see bench/README.md). Only a
    hopeless mutant of its own is judged sooner (EARLY_FEEDBACKS, EARLY_DROP).
    """

    def __init__(self, path: Path, commons: Path | None, rng: random.Random,
                 patience: int = 8, margin: float = MARGIN, owner: str = "") -> None:
        self.path = path
        self.commons = commons
        self.rng = rng
        self.patience = patience
        self.margin = margin
        self.owner = owner
        self._window: list[float] = []
        # The genome as the policy knows it: genome.bin plus any state not yet written.
        self._genome: Genome | None = None

    def observe(self, fitness: float) -> bool:
        """Take one feedback; True when genome.bin was rewritten."""
        if not math.isfinite(fitness):
            return False
        self._window.append(fitness)
        if len(self._window) < min(self.patience, EARLY_FEEDBACKS):
            return False
        score = sum(self._window) / len(self._window)
        genome = self._genome or read_genome(self.path)
        if genome is None:
            # Never write over a genome we cannot read: the orchestrator will
            # quarantine it, and the evidence must stay as it is.
            self._window.clear()
            return False
        self._genome = genome
        if len(self._window) < self.patience and not self._hopeless(genome, score):
            return False
        self._window.clear()
        catalogue = read_catalogue(self.commons)
        peer = read_peer(self.commons, self.rng)
        updated = step(genome, score, self.rng, catalogue, peer=peer, margin=self.margin,
                       owner=self.owner)
        if expression(updated) == expression(genome):
            # Nothing expressed changes: no rewrite (it would cost a restart and
            # measure nothing); the state is written with the next change.
            self._genome = updated
            return False
        write_genome(self.path, updated)
        self._genome = updated
        return True

    def _hopeless(self, genome: Genome, score: float) -> bool:
        """True when our own pending trial already measures EARLY_DROP below its baseline."""
        trial = Trial.from_state(genome["state"].get("trial"))
        return (trial is not None and trial.owner == self.owner
                and score < trial.baseline - EARLY_DROP)
