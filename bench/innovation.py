"""Open-ended evolution on the default template: do agents invent useful genes?

    python bench/innovation.py                          # 3 seeds, 100 agents, 30 generations
    python bench/innovation.py --seeds 5 --generations 60 --energy-cost 0.02

For each seed, one workspace of N agents (``evolve init N --seed S``) runs ``evolve -q
life-cycle --generations G --seed S`` with ``innovation.enabled``, and the same with it
off. Then, per run:

- the accepted innovations, the generation each was accepted in, and how much of each
  unsolvable family of the ``sequences`` environment (``collatz``, ``primes_offset``,
  ``sqrt_digits``, ``noise``) its best function solves, measured here on 200 fresh
  tasks per family *in the agents' sandbox* (``operations/trial.py``: the bench never
  imports what agents wrote);
- its adoption at the end: the share of the active agents expressing it;
- the living genomes' *true* fitness at the end (best and mean), scored on the
  optimum's 4000-task sample (template genes by the landscape's answer masks, invented
  ones by their answers in a sandboxed trial on the same tasks), against the
  template-only optimum at the same energy cost (``environments/landscape.py``,
  exhaustive over the template's genes); the measured history's max is kept in the
  JSON lines, but a window of a few dozen tasks often scores above the optimum;
- the cost: mean wall time of a generation with innovation on, as a ratio to off.

Targets (the issue): an accepted innovation solves >= 90 % of a family no template gene
solves in >= 3 of 5 seeds within 60 generations; it spreads to >= 50 % when worth its
energy cost; the best exceeds the template-only optimum with innovation on, never off;
innovation adds <= 10 % to a generation's wall time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from evolve_ai.core import genome as genome_codec
from evolve_ai.environments import families
from evolve_ai.environments.landscape import (
    OptimumResult,
    expressed_genes,
    load_catalogue,
    optimum,
)
from evolve_ai.errors import EvolveError
from evolve_ai.operations.trial import TrialFailed, Trials
from evolve_ai.services import config as config_service
from evolve_ai.services.workspace import resolve_root
from evolve_ai.testing import read_events, run_evolve, set_config

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cli import positive_float, positive_int

FAMILY_TASKS = 200


def run(base: Path, name: str, agents: int, generations: int, seed: int,
        settings: dict[str, object]) -> Path:
    root = base / name
    made = run_evolve(root, "init", str(agents), "--seed", str(seed))
    if made.returncode != 0:
        raise SystemExit(made.stderr)
    set_config(root, {"population.size": agents, **settings})
    print(f"# {name}: {generations} generations", file=sys.stderr, flush=True)
    done = run_evolve(root, "-q", "life-cycle", "--generations", str(generations),
                      "--seed", str(seed), timeout=6 * 3600)
    if done.returncode != 0:
        raise SystemExit(f"{name}: {done.stderr}")
    return root


def seconds_per_generation(root: Path) -> float:
    stamps = [_parse(e["timestamp"]) for e in read_events(root, "generation")]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.mean(gaps) if gaps else float("nan")


def _parse(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def coverage(root: Path, module: str, seed: int) -> dict[str, float]:
    """Per unsolvable family, the best share of tasks one of the module's functions
    solves (run in the sandbox, never imported here)."""
    workspace = resolve_root(str(root))
    trials = Trials(workspace, config_service.load(workspace.config_path))
    source = (root / "agent_template" / module).read_bytes()
    functions = [line.split("(")[0].removeprefix("def ").strip()
                 for line in source.decode().splitlines() if line.startswith("def ")]
    genes = [f"agent.candidate:{name}" for name in functions]
    found = {}
    try:
        for family in families.UNSOLVABLE_FAMILIES:
            rng = random.Random(f"bench:{seed}:{family}")
            tasks = [families.make_task(rng, [family]) for _ in range(FAMILY_TASKS)]
            try:
                outcome = trials.run({"candidate.py": source}, genes,
                                     [list(t.terms) for t in tasks], 30.0)
            except TrialFailed:
                found[family] = 0.0
                continue
            found[family] = max(
                (sum(1 for task, value in zip(tasks, outcome.answers[gene], strict=True)
                     if type(value) is int and value == task.answer) / len(tasks)
                 for gene in genes), default=0.0)
    finally:
        trials.close()
    return found


def true_fitness(root: Path, reference: OptimumResult) -> list[float]:
    """Every living genome scored on the optimum's 4000-task sample: the template's genes
    from the landscape's answer masks, invented ones from their answers in a sandboxed
    trial on the same tasks; registry order, first answer wins, minus the energy."""
    catalogue = load_catalogue(root / "agent_template")
    index = {name: i for i, name in enumerate(reference.genes)}
    rng = random.Random(reference.seed)  # the optimum's own sample
    sample = [families.make_task(rng) for _ in range(reference.tasks)]
    masks: dict[str, tuple[int, int]] = {name: (reference.answered[i], reference.correct[i])
                                         for name, i in index.items()}
    invented = [entry for entry in catalogue.files if entry.path.startswith(
        "src/agent/invented_")]
    if invented:
        workspace = resolve_root(str(root))
        trials = Trials(workspace, config_service.load(workspace.config_path))
        try:
            for entry in invented:
                genes = [f"agent.candidate:{name}" for name in entry.functions]
                outcome = trials.run({"candidate.py": (root / "agent_template" /
                                                       entry.path).read_bytes()},
                                     genes, [list(t.terms) for t in sample], 120.0)
                for name, gene in zip(entry.functions, genes, strict=True):
                    answered = correct = 0
                    for bit, (task, value) in enumerate(
                            zip(sample, outcome.answers[gene], strict=True)):
                        if type(value) is int:
                            answered |= 1 << bit
                            if value == task.answer:
                                correct |= 1 << bit
                    masks[f"{entry.module}.{name}"] = (answered, correct)
        finally:
            trials.close()
    scores = []
    for directory in sorted((root / "agents").iterdir()):
        try:
            genome = genome_codec.decode((directory / "genome.bin").read_bytes(), catalogue)
        except (OSError, EvolveError):
            continue
        names = [name for name in expressed_genes(genome, catalogue) if name in masks]
        pending, right = (1 << reference.tasks) - 1, 0
        for name in names:
            answered, correct = masks[name]
            right |= pending & correct
            pending &= ~answered
        scores.append(right.bit_count() / reference.tasks - reference.energy_cost * len(names))
    return scores


def report(root: Path, seed: int, reference: OptimumResult) -> dict[str, Any]:
    data = json.loads(run_evolve(root, "innovations", "--json").stdout)
    status = json.loads(run_evolve(root, "status", "--json").stdout)
    best = max((h["max"] for h in status["history"] if h["max"] is not None), default=0.0)
    last = status["history"][-1]["max"] or 0.0
    accepted = []
    for proposal in data["accepted"]:
        accepted.append({"module": proposal["module"], "generation": proposal["generation"],
                         "adoption": proposal["adoption"],
                         "coverage": coverage(root, proposal["module"], seed)})
    scores = true_fitness(root, reference)
    return {"accepted": accepted, "best": best, "last_max": last,
            "true_best": max(scores, default=0.0),
            "true_mean": sum(scores) / len(scores) if scores else 0.0,
            "seconds": seconds_per_generation(root),
            "rejected": len(data["rejected"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=positive_int, default=100)
    parser.add_argument("--generations", type=positive_int, default=30)
    parser.add_argument("--seeds", type=positive_int, default=3)
    parser.add_argument("--energy-cost", type=positive_float, default=0.02,
                        help="evaluation.energy_cost of every run (default 0.02: a gene "
                             "solving collatz, 4.4 %% of the tasks, is worth its cost)")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces")
    parser.add_argument("--no-off", action="store_true",
                        help="skip the runs with innovation off (half the time; no cost "
                             "ratio: an off run's true best cannot exceed the template-only "
                             "optimum, which is the best of every template genome)")
    args = parser.parse_args()
    seeds = random.SystemRandom().sample(range(1, 10_000), args.seeds)
    print(f"seeds: {seeds}; {args.agents} agents, {args.generations} generations, "
          f"energy cost {args.energy_cost}", flush=True)
    reference = optimum(energy_cost=args.energy_cost, tasks=4000, seed=1)
    print(f"template-only optimum at energy {args.energy_cost}: "
          f"{reference.best.fitness:.4f}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="evolve-bench-innovation-"))
    common: dict[str, object] = {"evaluation.energy_cost": args.energy_cost}
    rows: list[tuple[int, dict[str, Any], dict[str, Any] | None]] = []
    try:
        for seed in seeds:
            on = run(base, f"on-{seed}", args.agents, args.generations, seed,
                     {**common, "innovation.enabled": True})
            with_it = report(on, seed, reference)
            without = None
            if not args.no_off:
                off_root = run(base, f"off-{seed}", args.agents, args.generations, seed,
                               common)
                without = report(off_root, seed, reference)
            rows.append((seed, with_it, without))
            print(json.dumps({"seed": seed, "on": with_it, "off": without}), flush=True)
    finally:
        if args.keep:
            print(f"workspaces kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("\n| seed | accepted (generation) | best family coverage | adoption | true best "
          "on / off | true mean on / off | optimum | s per generation on / off |")
    print("|---|---|---|---|---|---|---|---|")
    solved = beat_on = beat_off = spread = 0
    ratios = []
    for seed, on_run, off_run in rows:
        top = max(on_run["accepted"], default=None,
                  key=lambda a: max(a["coverage"].values(), default=0.0))
        family, share = ("-", 0.0) if top is None else max(top["coverage"].items(),
                                                            key=lambda kv: kv[1])
        adoption = "-" if top is None or top["adoption"] is None else f"{top['adoption']:.0%}"
        solved += share >= 0.9
        spread += top is not None and (top["adoption"] or 0.0) >= 0.5
        beat_on += on_run["true_best"] > reference.best.fitness
        off: dict[str, Any] = off_run or dict.fromkeys(
            ("true_best", "true_mean", "seconds"), math.nan)
        beat_off += off["true_best"] > reference.best.fitness
        if off_run is not None:
            ratios.append(on_run["seconds"] / off_run["seconds"])
        print(f"| {seed} | {len(on_run['accepted'])} "
              f"({', '.join(str(a['generation']) for a in on_run['accepted']) or '-'}) "
              f"| {family} {share:.0%} | {adoption} | {on_run['true_best']:.4f} / "
              f"{off['true_best']:.4f} | {on_run['true_mean']:.4f} / "
              f"{off['true_mean']:.4f} | {reference.best.fitness:.4f} "
              f"| {on_run['seconds']:.1f} / {off['seconds']:.1f} |")
    print(f"\nan innovation solving >= 90 % of an unsolvable family: {solved} of {len(rows)}")
    print(f"its adoption at the end >= 50 %: {spread} of {len(rows)}")
    print(f"best above the template-only optimum: on {beat_on} of {len(rows)}, "
          + (f"off {beat_off} of {len(rows)}" if ratios else "off not run"))
    if ratios:
        print(f"generation wall time, on / off: {statistics.mean(ratios):.3f} "
              f"(per seed: {', '.join(f'{r:.3f}' for r in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
