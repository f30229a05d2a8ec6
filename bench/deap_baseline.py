"""DEAP on evolve's own landscape and genome layout: the baseline to beat.

    python bench/deap_baseline.py                 # 20 seeds drawn at random, 60 generations
    python bench/deap_baseline.py --seeds 5 --generations 30 --energy-cost 0.045

The genome is evolve's: one bit per module (file) of the template, then one bit per
function gene in registry order; a function is expressed when its bit and its module's
are on, and answers in registry order (the first answer wins), exactly as the
template's runtime dispatches. An evaluation scores the expressed genes on
``TASKS_PER_EVALUATION`` tasks drawn at random from the optimum's sample (the noise an
agent's measured fitness has), minus the energy cost per expressed gene. The algorithm
is DEAP's ``eaMuPlusLambda`` step by step with ``selBest`` survivors (DEAP's best on
this landscape, measured outside the project), so that the tasks spent and the
population's *true* mean (on the whole sample) can be read at each generation.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deap import algorithms, base, creator, tools

from evolve_ai.core.catalogue import Catalogue
from evolve_ai.environments.landscape import OptimumResult, load_catalogue, optimum

TASKS_PER_EVALUATION = 64
MU = LAMBDA = 60
CXPB, MUTPB = 0.5, 0.5


@dataclass(frozen=True, slots=True)
class DeapRun:
    seed: int
    means: list[float]  # the population's true mean fitness after each generation (0: init)
    tasks: list[int]  # tasks spent up to and including each generation
    holding: list[int]  # individuals at the optimum after each generation

    @property
    def at_optimum(self) -> int:
        return self.holding[-1]

    def reached(self, threshold: float) -> tuple[int, int] | None:
        """(generation, tasks) when the true mean first reached ``threshold``."""
        for generation, mean in enumerate(self.means):
            if mean >= threshold:
                return generation, self.tasks[generation]
        return None


class Landscape:
    """evolve's genome layout over the optimum's sample: what a bit string expresses, its
    true fitness (the whole sample) and a noisy evaluation (``TASKS_PER_EVALUATION``)."""

    def __init__(self, reference: OptimumResult, catalogue: Catalogue, rng: random.Random
                 ) -> None:
        self.reference, self.rng = reference, rng
        self.files = len(catalogue.files)
        self.owners = [i for i, entry in enumerate(catalogue.files) for _ in entry.functions]
        self.width = self.files + len(self.owners)
        self.index = {name: i for i, name in enumerate(reference.genes)}
        self.true_cache: dict[tuple[str, ...], float] = {}
        self.right_cache: dict[tuple[str, ...], int] = {}

    def expressed(self, bits: list[int]) -> tuple[str, ...]:
        return tuple(name for g, name in enumerate(self.reference.genes)
                     if bits[self.files + g] and bits[self.owners[g]])

    def right(self, genes: tuple[str, ...]) -> int:
        """The tasks of the sample answered right, as a bit mask (first answer wins)."""
        found = self.right_cache.get(genes)
        if found is None:
            pending, found = (1 << self.reference.tasks) - 1, 0
            for name in genes:
                i = self.index[name]
                found |= pending & self.reference.correct[i]
                pending &= ~self.reference.answered[i]
            self.right_cache[genes] = found
        return found

    def true_fitness(self, bits: list[int]) -> float:
        genes = self.expressed(bits)
        if genes not in self.true_cache:
            self.true_cache[genes] = self.reference.evaluate(genes).fitness
        return self.true_cache[genes]

    def evaluate(self, bits: list[int]) -> tuple[float]:
        genes = self.expressed(bits)
        drawn = self.rng.sample(range(self.reference.tasks), TASKS_PER_EVALUATION)
        mask = self.right(genes)
        correct = sum(1 for task in drawn if mask >> task & 1)
        return (correct / TASKS_PER_EVALUATION - self.reference.energy_cost * len(genes),)


def run(reference: OptimumResult, catalogue: Catalogue, seed: int, generations: int
        ) -> DeapRun:
    rng = random.Random(seed)
    landscape = Landscape(reference, catalogue, rng)
    width, true_fitness, evaluate = landscape.width, landscape.true_fitness, landscape.evaluate
    if not hasattr(creator, "EvolveFitness"):
        creator.create("EvolveFitness", base.Fitness, weights=(1.0,))
        creator.create("EvolveGenome", list, fitness=creator.EvolveFitness)
    toolbox: Any = base.Toolbox()
    toolbox.register("individual", lambda: creator.EvolveGenome(
        rng.randint(0, 1) for _ in range(width)))
    toolbox.register("evaluate", evaluate)
    toolbox.register("mate", tools.cxTwoPoint)
    toolbox.register("mutate", tools.mutFlipBit, indpb=1.0 / width)
    toolbox.register("select", tools.selBest)
    random.seed(seed)  # DEAP's operators draw from the random module
    population = [toolbox.individual() for _ in range(MU)]
    spent = 0
    for individual in population:
        individual.fitness.values = toolbox.evaluate(individual)
        spent += TASKS_PER_EVALUATION
    best = reference.best.fitness - 1e-12
    means, tasks, holding = [], [], []

    def tally() -> None:
        means.append(sum(true_fitness(i) for i in population) / MU)
        tasks.append(spent)
        holding.append(sum(1 for i in population if true_fitness(i) >= best))

    tally()
    for _ in range(generations):
        offspring = algorithms.varOr(population, toolbox, LAMBDA, CXPB, MUTPB)
        for individual in offspring:
            if not individual.fitness.valid:
                individual.fitness.values = toolbox.evaluate(individual)
                spent += TASKS_PER_EVALUATION
        population[:] = toolbox.select(population + offspring, MU)
        tally()
    return DeapRun(seed, means, tasks, holding)


def main() -> int:
    if __package__ in (None, ""):  # run as a script: make `bench` importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench._cli import positive_float, positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=positive_int, default=20)
    parser.add_argument("--generations", type=positive_int, default=60)
    parser.add_argument("--energy-cost", type=positive_float, default=0.045)
    args = parser.parse_args()
    reference = optimum(energy_cost=args.energy_cost, tasks=4000, seed=1)
    catalogue = load_catalogue()
    seeds = random.SystemRandom().sample(range(1, 100_000), args.seeds)
    threshold = 0.95 * reference.best.fitness
    print(f"DEAP eaMuPlusLambda (mu = lambda = {MU}, cxpb {CXPB}, mutpb {MUTPB}, selBest), "
          f"{TASKS_PER_EVALUATION} tasks an evaluation, energy {args.energy_cost}, "
          f"optimum {reference.best.fitness:.4f}; seeds {seeds}")
    print("| seed | generation >= 95 % | tasks then | mean/opt at 20 | at 30 | at the end "
          "| at the optimum |")
    print("|---|---|---|---|---|---|---|")
    reached = []
    for seed in seeds:
        result = run(reference, catalogue, seed, args.generations)
        hit = result.reached(threshold)
        reached.append(hit)
        at = [result.means[min(g, args.generations)] / reference.best.fitness
              for g in (20, 30, args.generations)]
        print(f"| {seed} | {'-' if hit is None else hit[0]} | "
              f"{'-' if hit is None else hit[1]} | {at[0]:.3f} | {at[1]:.3f} | {at[2]:.3f} "
              f"| {result.at_optimum} |")
    hits = [hit for hit in reached if hit is not None]
    print(f"\nreached 95 % of the optimum: {len(hits)} of {len(seeds)} runs"
          + (f"; median generation {statistics.median(h[0] for h in hits):g}, "
             f"median tasks {statistics.median(h[1] for h in hits):g}" if hits else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
