"""The known optimum of the default template under the default ``sequences`` environment.

Run it from the checkout, with the venv that has evolve installed::

    python bench/optimum.py                       # 4000 tasks, seed 1, evolve.toml's energy cost
    python bench/optimum.py --tasks 20000 --seed 7 --energy-cost 0.02
    python bench/optimum.py --lifetime 12         # stateful genes restart every 12 tasks

The computation is ``evolve_ai.environments.landscape`` (bench/README.md says
how the optimum is found, exhaustively); this script is its command line
(``bench/evolution.py`` and the template's tests use the module directly)::

    from evolve_ai.environments.landscape import optimum
    result = optimum(energy_cost=0.01, tasks=4000, seed=1)
    result.best.fitness, result.evaluate(["polynomial.cubic"]).fitness

``--lifetime L`` reloads the template's modules every L tasks, which resets
any module state: the optimum of an agent restarted that often (the life
cycle restarts an agent at each genome change). Without it (the default)
state is kept over the whole sample: the optimum of an immortal agent.

Reading the output:

* the gene table: per gene, how many tasks it answers and how many right, and
  the change in fitness when that gene alone is added to (+) or removed from
  (-) the optimum. A decoy's ``+`` is far below ``-energy_cost`` (it shadows
  the genes after it: harmful genes); a redundant genuine gene's ``+`` is
  exactly ``-energy_cost`` (energy makes bloat lose); a gene whose ``-`` is
  smaller than its solo accuracy is covered by others (gene interactions);
* ``optimum``: THE OPTIMUM, its genes in registry order, accuracy, gene count
  and fitness; ``margin`` is how far the second best is below it;
* ``top 5``: the best genomes;
* ``random genome``: the exact mean fitness of an ``evolve init`` genome, the
  sampled cross-check, and how far the optimum is above it.

The sample is finite: the optimum's accuracy has a standard error of about
sqrt(p (1 - p) / tasks) (0.006 at 4000 tasks); genomes whose fitness differ by
less than that from the optimum may trade places with another seed.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from evolve_ai.environments.landscape import (
    DEFAULT_SEED,
    DEFAULT_TASKS,
    RANDOM_SAMPLE,
    OptimumResult,
    optimum,
)
from evolve_ai.services.config import Config

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cli import non_negative_float, positive_int

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = REPO / "agent_template"


def default_energy_cost() -> float:
    """``[evaluation] energy_cost`` as a fresh ``evolve.toml`` has it."""
    return Config().evaluation.energy_cost


# --- report ------------------------------------------------------------------------------


def format_report(result: OptimumResult) -> list[str]:
    lifetime = ("state kept over the whole sample" if result.lifetime is None
                else f"template modules reloaded every {result.lifetime} tasks")
    lines = [
        f"template {result.template}: {len(result.genes)} function genes; "
        f"{result.tasks} tasks, seed {result.seed}; energy_cost {result.energy_cost:g}; "
        f"{lifetime}",
        f"tasks from solvable families {result.solvable} ({result.solvable / result.tasks:.1%}),"
        f" answered right by at least one gene {result.reachable} "
        f"({result.reachable / result.tasks:.1%})",
        "",
        f"{'gene (registry order)':<34} {'answers':>7} {'right':>6} {'+ to opt':>9} "
        f"{'- from opt':>10}",
    ]
    best = set(result.best.genes)
    for row in result.gene_stats():
        mark = "*" if row.name in best else " "
        added = "" if row.name in best else f"{row.added:+.4f}"
        removed = f"{row.removed:+.4f}" if row.name in best else ""
        lines.append(f"{mark} {row.name:<32} {row.answered:>7} {row.correct:>6} {added:>9} "
                     f"{removed:>10}")
    b = result.best
    margin = b.fitness - result.top[1].fitness if len(result.top) > 1 else math.nan
    lines += [
        "",
        f"optimum: fitness {b.fitness:.4f} = accuracy {b.accuracy:.4f} - "
        f"{result.energy_cost:g} x {len(b.genes)} genes; margin over the next best "
        f"{margin:.4f}",
        f"  genes: {', '.join(b.genes)}",
        "",
        f"top {len(result.top)}:",
        f"  {'#':>2} {'fitness':>8} {'accuracy':>8} {'genes':>5}  expressed genes",
    ]
    for rank, score in enumerate(result.top, start=1):
        lines.append(f"  {rank:>2} {score.fitness:>8.4f} {score.accuracy:>8.4f} "
                     f"{len(score.genes):>5}  {', '.join(score.genes)}")
    ratio = b.fitness / result.random_mean if result.random_mean > 0 else math.inf
    lines += [
        "",
        "random genome (evolve init: each file and each function on with p = 1/2):",
        f"  mean fitness {result.random_mean:.4f} exact, {result.random_sampled:.4f} over "
        f"{RANDOM_SAMPLE} random_genome draws; optimum = {ratio:.1f} x random mean, "
        f"+{b.fitness - result.random_mean:.4f}",
        f"  share of init genomes at or above half the optimum "
        f"({b.fitness / 2:.4f}): {result.random_share_above_half:.2%}",
        f"computed in {result.seconds:.1f} s",
    ]
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Enumerate every genome of the default template and print the optimum.")
    parser.add_argument("--tasks", type=positive_int, default=DEFAULT_TASKS,
                        help=f"tasks in the sample (default: {DEFAULT_TASKS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the task sample (default: {DEFAULT_SEED})")
    parser.add_argument("--energy-cost", type=non_negative_float, default=None,
                        help="fitness lost per expressed gene (default: evolve.toml's, "
                             f"{default_energy_cost():g})")
    parser.add_argument("--lifetime", type=positive_int, default=None,
                        help="reload the template every N tasks (default: never)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE,
                        help="template directory (default: the checkout's agent_template/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cost = default_energy_cost() if args.energy_cost is None else args.energy_cost
    try:
        result = optimum(cost, args.tasks, args.seed, lifetime=args.lifetime,
                         template=args.template.resolve())
    except Exception as exc:
        print(f"bench/optimum.py: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(format_report(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
