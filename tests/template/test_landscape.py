"""The landscape of the default template and environment.

The optimum must be unambiguous at the evaluation budget: each of its genes
worth clearly more than the noise of a fitness measured on a few hundred
tasks, every other gene clearly costing, and the same genome whether or not
stateful genes keep their state (the life cycle restarts an agent at each
genome change). Computed by the exhaustive enumeration of
evolve_ai.environments.landscape (what bench/optimum.py prints; the method and
the latest figures are in bench/README.md).
"""

import pytest

from evolve_ai.environments.landscape import OptimumResult, optimum
from evolve_ai.services.config import Config

OPTIMUM = (
    "geometric.rational_ratio",
    "interleaved.two_arithmetic",
    "learner.learned_recurrence",
    "polynomial.cubic",
    "recurrence.linear_order2",
)
# What selection and the agent's own policy can tell apart: a fitness averaged
# over 128 tasks (a trial at the default evaluation) has a standard error of
# about 0.035.
GAIN = 0.05
LOSS = -0.03
TASKS = 3000


@pytest.fixture(scope="module")
def immortal() -> OptimumResult:
    return optimum(Config().evaluation.energy_cost, TASKS, seed=2)


@pytest.fixture(scope="module")
def restarted() -> OptimumResult:
    return optimum(Config().evaluation.energy_cost, TASKS, seed=2,
                   lifetime=Config().evaluation.window)


def test_the_optimum_is_known(immortal: OptimumResult, restarted: OptimumResult) -> None:
    assert immortal.best.genes == OPTIMUM
    assert restarted.best.genes == OPTIMUM
    assert immortal.best.fitness - immortal.top[1].fitness > -LOSS


@pytest.mark.parametrize("which", ["immortal", "restarted"])
def test_every_gene_is_clearly_in_or_out(which: str, request: pytest.FixtureRequest) -> None:
    result: OptimumResult = request.getfixturevalue(which)
    for row in result.gene_stats():
        if row.name in OPTIMUM:
            assert row.removed <= -GAIN, row
        else:
            assert row.added <= LOSS, row


def test_far_above_a_random_genome(immortal: OptimumResult) -> None:
    assert immortal.best.fitness > 10 * immortal.random_mean
    assert immortal.random_share_above_half < 0.05


def test_harmful_genes_and_interactions_exist(immortal: OptimumResult) -> None:
    stats = {row.name: row for row in immortal.gene_stats()}
    cost = immortal.energy_cost
    # Decoys shadow the genes after them: far worse than their energy.
    shadowing = [row for row in stats.values() if row.added < -5 * cost]
    assert len(shadowing) >= 5
    # Redundant genuine genes lose exactly their energy: bloat loses.
    assert stats["arithmetic.constant_difference"].added == pytest.approx(-cost)
    # A gene covered by others in the optimum is worth less than alone.
    alone = immortal.evaluate(["learner.learned_recurrence"]).fitness
    assert -stats["learner.learned_recurrence"].removed < alone
