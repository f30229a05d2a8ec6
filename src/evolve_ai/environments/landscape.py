"""The fitness landscape of a template under the ``sequences`` environment: its known optimum.

For offline analysis only (``bench/optimum.py``, ``bench/evolution.py``, the default
template's tests); the method is in bench/README.md ("How the optimum is computed").
Unlike the rest of ``evolve_ai``, it imports the template's modules and calls its genes
*in this process*: never use it on a template you would not run yourself, nor from the
orchestrator (``evolve`` never imports it). It leaves ``TEMPLATE/src`` on ``sys.path``,
the template's package as this process's ``agent`` (a second template needs another
process) and ``sys.dont_write_bytecode`` set (no ``__pycache__`` in the template). Example:
``optimum(energy_cost=0.045, tasks=4000, seed=1).best.genes``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from evolve_ai.core import genome as genome_codec
from evolve_ai.core.catalogue import Catalogue
from evolve_ai.environments.families import SequenceTask, make_task
from evolve_ai.services import template as template_service

DEFAULT_TASKS = 4000
DEFAULT_SEED = 1
TOP = 5  # genomes kept in OptimumResult.top
RANDOM_SAMPLE = 20000  # genomes drawn by random_genome for the cross-check


@dataclass(frozen=True, slots=True)
class GenomeScore:
    """One set of expressed genes and how it does on the sample."""

    genes: tuple[str, ...]  # "module.function", in registry order
    correct: int
    tasks: int
    energy_cost: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.tasks

    @property
    def fitness(self) -> float:
        return fitness_of(self.correct, self.tasks, len(self.genes), self.energy_cost)


@dataclass(frozen=True, slots=True)
class GeneStats:
    name: str  # "module.function"
    answered: int
    correct: int
    added: float  # fitness change when added to the optimum (0.0 when already in it)
    removed: float  # fitness change when removed from the optimum (0.0 when not in it)


@dataclass(frozen=True, slots=True)
class OptimumResult:
    energy_cost: float
    tasks: int
    seed: int
    lifetime: int | None
    template: str
    genes: tuple[str, ...]  # every function gene, in registry order
    answered: tuple[int, ...]  # per gene: bit i set when it answers task i
    correct: tuple[int, ...]  # per gene: bit i set when it answers task i right
    solvable: int  # tasks from a solvable family
    reachable: int  # tasks at least one gene answers right
    best: GenomeScore
    top: tuple[GenomeScore, ...]
    random_mean: float  # exact expected fitness of an `evolve init` genome
    random_sampled: float  # mean over RANDOM_SAMPLE genomes from random_genome
    random_share_above_half: float  # probability that an init genome scores >= half the optimum
    seconds: float

    def evaluate(self, genes: Iterable[str]) -> GenomeScore:
        """Score any set of expressed genes (unknown names are an error) on the same sample."""
        chosen = set(genes)
        unknown = chosen - set(self.genes)
        if unknown:
            raise ValueError(f"not genes of the template: {sorted(unknown)}")
        ordered = tuple(name for name in self.genes if name in chosen)
        index = {name: i for i, name in enumerate(self.genes)}
        pending = (1 << self.tasks) - 1
        right = 0
        for name in ordered:
            i = index[name]
            right |= pending & self.correct[i]
            pending &= ~self.answered[i]
        return GenomeScore(ordered, right.bit_count(), self.tasks, self.energy_cost)

    def at_optimum(self, genes: Iterable[str]) -> bool:
        """True when these genes score the optimum's fitness on the sample."""
        return self.evaluate(genes).fitness >= self.best.fitness - 1e-12

    def gene_stats(self) -> list[GeneStats]:
        best = set(self.best.genes)
        rows = []
        for i, name in enumerate(self.genes):
            if name in best:
                added, removed = 0.0, self.evaluate(best - {name}).fitness - self.best.fitness
            else:
                added, removed = self.evaluate(best | {name}).fitness - self.best.fitness, 0.0
            rows.append(GeneStats(name, self.answered[i].bit_count(),
                                  self.correct[i].bit_count(), added, removed))
        return rows


def fitness_of(correct: int, tasks: int, genes: int, energy_cost: float) -> float:
    """``SequencesEnvironment.fitness`` for a window of ``tasks`` scores, ``correct`` of them 1."""
    return min(1.0, max(0.0, correct / tasks - energy_cost * genes))


def expressed_genes(genome: genome_codec.Genome, catalogue: Catalogue) -> tuple[str, ...]:
    """The ``module.function`` names a genome expresses, in registry order."""
    return tuple(f"{entry.module}.{name}" for entry, names in genome.expressed(catalogue)
                 for name in names)


def load_catalogue(template: Path | None = None) -> Catalogue:
    """The catalogue of ``template`` (default: the bundled one), as ``evolve init`` makes it."""
    return template_service.load(template or template_service.bundled_template())[1]


# --- calling the template's genes --------------------------------------------------


def _import_template(template: Path) -> None:
    source = str(template / "src")
    if source not in sys.path:
        sys.path.insert(0, source)
    sys.dont_write_bytecode = True  # leave no __pycache__ in the template


def _strategies(catalogue: Catalogue, reload: bool) -> list[Callable[[list[int]], object]]:
    """Every gene's function, in registry order; ``reload`` re-runs the modules (fresh state)."""
    functions: list[Callable[[list[int]], object]] = []
    for entry in catalogue.files:
        module: ModuleType = importlib.import_module(f"agent.{entry.module}")
        if reload:
            module = importlib.reload(module)
        functions.extend(getattr(module, name) for name in entry.functions)
    return functions


def answer_masks(catalogue: Catalogue, template: Path, tasks: Sequence[SequenceTask],
                 lifetime: int | None) -> tuple[list[int], list[int]]:
    """Per gene, the tasks it answers and those it answers right, as bit masks."""
    _import_template(template)
    runtime = importlib.import_module("agent.runtime")
    answer_value: Callable[[object], int | None] = runtime.answer_value
    count = catalogue.gene_count
    answered, correct = [0] * count, [0] * count
    strategies = _strategies(catalogue, reload=True)
    for index, task in enumerate(tasks):
        if lifetime is not None and index and index % lifetime == 0:
            strategies = _strategies(catalogue, reload=True)
        bit = 1 << index
        for gene, strategy in enumerate(strategies):
            try:
                value = answer_value(strategy(list(task.terms)))
            except Exception:  # the runtime counts a failing strategy as no answer
                value = None
            if value is None:
                continue
            answered[gene] |= bit
            if value == task.answer:
                correct[gene] |= bit
    return answered, correct


# --- enumeration ----------------------------------------------------------------------


def _file_factors(catalogue: Catalogue) -> tuple[list[int], list[float], list[float]]:
    """Per gene: whether it closes its file, and the init weights of that file on or off.

    With k functions, a file whose expressed subset is a given non-empty S has
    probability 1/2 * (1/2)**k; the empty subset adds 1/2 (file off).
    """
    closes: list[int] = []
    on: list[float] = []
    off: list[float] = []
    for entry in catalogue.files:
        k = len(entry.functions)
        for position in range(k):
            last = position == k - 1
            closes.append(1 if last else 0)
            on.append(0.5 * 0.5**k if last else 0.0)
            off.append((0.5 + 0.5 * 0.5**k) if last else 0.0)
    return closes, on, off


@dataclass(slots=True)
class _Walk:
    answered: Sequence[int]
    correct: Sequence[int]
    tasks: int
    energy_cost: float
    closes: Sequence[int]
    on: Sequence[float]
    off: Sequence[float]
    keep: int
    top: list[tuple[float, int, int, int, int]]  # (fitness, -genes, -order, mask, right)
    threshold: float = -1.0
    weighted: float = 0.0
    above: float = 0.0  # init probability of fitness >= half_best, set by a second walk
    half_best: float = math.inf

    def run(self) -> None:
        self._visit(0, (1 << self.tasks) - 1, 0, 0, 0, 1.0, False)
        self._trim()

    def _visit(self, depth: int, pending: int, right: int, mask: int, genes: int,
               weight: float, file_on: bool) -> None:
        if depth == len(self.answered):
            fitness = min(1.0, max(0.0, right / self.tasks - self.energy_cost * genes))
            self.weighted += weight * fitness
            if fitness >= self.half_best:
                self.above += weight
            if fitness >= self.threshold:
                self._offer(fitness, genes, mask, right)
            return
        closes = self.closes[depth]
        # Gene off.
        w = weight * (self.off[depth] if not file_on else self.on[depth]) if closes else weight
        self._visit(depth + 1, pending, right, mask, genes, w,
                    False if closes else file_on)
        # Gene on.
        gained = (pending & self.correct[depth]).bit_count()
        w = weight * self.on[depth] if closes else weight
        self._visit(depth + 1, pending & ~self.answered[depth], right + gained,
                    mask | (1 << depth), genes + 1, w, not closes)

    def _offer(self, fitness: float, genes: int, mask: int, right: int) -> None:
        # Best first: higher fitness, then fewer genes, then earlier genes in registry order.
        self.top.append((fitness, -genes, -_order_key(mask, len(self.answered)), mask, right))
        if len(self.top) > 4 * self.keep:
            self._trim()

    def _trim(self) -> None:
        self.top.sort(reverse=True)
        del self.top[self.keep:]
        if self.top and len(self.top) == self.keep:
            self.threshold = self.top[-1][0]


def _order_key(mask: int, width: int) -> int:
    """Smaller for masks whose genes come earlier in registry order (bit 0 first)."""
    return int(format(mask, f"0{width}b")[::-1], 2) if width else 0


def _names(mask: int, genes: Sequence[str]) -> tuple[str, ...]:
    return tuple(name for i, name in enumerate(genes) if mask >> i & 1)


def optimum(energy_cost: float, tasks: int = DEFAULT_TASKS, seed: int = DEFAULT_SEED, *,
            lifetime: int | None = None, template: Path | None = None,
            keep: int = TOP) -> OptimumResult:
    """The best genome of ``template`` (default: the bundled one) on ``tasks`` tasks drawn
    with ``seed``; ``lifetime`` reloads the template's modules every that many tasks (see
    bench/README.md). Runs the template's code in this process: offline analysis only."""
    if tasks < 1:
        raise ValueError("tasks must be at least 1")
    started = time.perf_counter()
    if template is None:
        template = template_service.bundled_template()
    catalogue = load_catalogue(template)
    genes = tuple(f"{entry.module}.{name}" for entry in catalogue.files
                  for name in entry.functions)
    rng = random.Random(seed)
    sample = [make_task(rng) for _ in range(tasks)]
    answered, correct = answer_masks(catalogue, template, sample, lifetime)
    closes, on, off = _file_factors(catalogue)
    walk = _Walk(answered, correct, tasks, energy_cost, closes, on, off, keep, [])
    walk.run()
    top = tuple(GenomeScore(_names(mask, genes), right, tasks, energy_cost)
                for _, _, _, mask, right in walk.top)
    # A second walk for the share of init genomes reaching half the optimum (cheap enough).
    above = _Walk(answered, correct, tasks, energy_cost, closes, on, off, 0, [],
                  threshold=math.inf, half_best=top[0].fitness / 2)
    above.run()
    result = OptimumResult(
        energy_cost=energy_cost, tasks=tasks, seed=seed, lifetime=lifetime,
        template=str(template), genes=genes, answered=tuple(answered), correct=tuple(correct),
        solvable=sum(1 for task in sample if task.solvable),
        reachable=_union(correct).bit_count(), best=top[0], top=top,
        random_mean=walk.weighted, random_sampled=math.nan,
        random_share_above_half=above.above, seconds=math.nan)
    return dataclasses.replace(result, random_sampled=_sampled_random_mean(result, catalogue),
                               seconds=time.perf_counter() - started)


def _union(masks: Iterable[int]) -> int:
    union = 0
    for mask in masks:
        union |= mask
    return union


def _sampled_random_mean(result: OptimumResult, catalogue: Catalogue) -> float:
    """Mean fitness of genomes drawn by ``random_genome`` the way ``evolve init`` draws them."""
    total = 0.0
    for ordinal in range(RANDOM_SAMPLE):
        rng = random.Random(f"evolve:{result.seed}:{ordinal}")
        rng.getrandbits(128)  # init draws the agent's id first
        genome = genome_codec.random_genome(catalogue, rng)
        total += result.evaluate(expressed_genes(genome, catalogue)).fitness
    return total / RANDOM_SAMPLE
