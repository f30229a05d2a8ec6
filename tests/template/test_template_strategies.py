"""The template's evolvable genes: layout, genuine strategies, decoys, robustness."""

import ast
import importlib
import inspect
import random
import time
from collections.abc import Callable, Iterator

import pytest
from agent import learner, memory
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.template.template_helpers import PACKAGE, Module, evolvable_genes

from evolve_ai.environments.families import (
    SOLVABLE_FAMILIES,
    UNSOLVABLE_FAMILIES,
    SequenceTask,
    make_task,
)

Strategy = Callable[[list[int]], int | None]

# Each genuine gene and the families it claims to solve exactly, every time.
CLAIMS: dict[str, tuple[str, ...]] = {
    "arithmetic.constant_difference": ("arithmetic",),
    "geometric.constant_ratio": ("geometric",),
    "geometric.rational_ratio": ("geometric", "geometric_fraction"),
    "polynomial.quadratic": ("arithmetic", "quadratic"),
    "polynomial.cubic": ("arithmetic", "quadratic", "cubic"),
    "recurrence.fibonacci_like": ("fibonacci",),
    "recurrence.linear_order2": ("fibonacci", "recurrence2", "affine"),
    "recurrence.affine": ("arithmetic", "geometric", "affine"),
    "learner.learned_recurrence": ("arithmetic", "fibonacci", "recurrence3"),
    "periodic.shortest_period": ("periodic",),
    "interleaved.two_arithmetic": ("arithmetic", "interleaved"),
}
STATEFUL = {"memory.recall_window": memory, "learner.learned_recurrence": learner}
DECOYS = {
    "arithmetic.average_step",
    "geometric.doubling",
    "polynomial.lagrange_extrapolate",
    "interleaved.zigzag",
    "heuristics.repeat_last",
    "heuristics.increment_last",
    "heuristics.mean_guess",
    "heuristics.linear_trend",
}


def strategy(gene: str) -> Strategy:
    module, function = gene.split(".")
    found: Strategy = getattr(importlib.import_module(f"agent.{module}"), function)
    return found


def tasks(families: tuple[str, ...], count: int, seed: int = 0) -> Iterator[SequenceTask]:
    for index in range(count):
        yield make_task(random.Random(seed * 100_003 + index), families)


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    """Stateful genes start empty, as in a fresh agent process."""
    for module in STATEFUL.values():
        module._forget()
    yield


# --- layout -----------------------------------------------------------------


def test_core_modules_and_entry_point(modules: list[Module]) -> None:
    core = {m.name for m in modules if m.core}
    assert {"runtime", "genetics"} <= core
    with_main = [m.name for m in modules if "main" in m.functions]
    assert with_main == ["runtime"]


def test_enough_evolvable_genes(modules: list[Module]) -> None:
    evolvable = [m for m in modules if not m.core]
    assert len(evolvable) >= 6
    assert len(evolvable_genes(modules)) >= 15
    assert all(m.docstring for m in modules)
    assert set(evolvable_genes(modules)) == set(CLAIMS) | {"memory.recall_window"} | DECOYS


def test_no_generated_files_in_the_template() -> None:
    assert not (PACKAGE / "__init__.py").exists()
    assert not (PACKAGE / "main.py").exists()


def test_gene_signatures() -> None:
    for gene in evolvable_genes():
        signature = inspect.signature(strategy(gene))
        assert [p.name for p in signature.parameters.values()] == ["terms"], gene
        assert signature.return_annotation == (int | None), gene


def test_evolvable_modules_use_only_stdlib_and_core() -> None:
    allowed_roots = {"collections", "fractions", "itertools", "math", "agent"}
    core = {m for m in PACKAGE.glob("*.py") if '__evolve__ = "core"' in m.read_text()}
    assert {m.stem for m in core} >= {"runtime", "genetics", "inventor"}
    for module in (m for m in PACKAGE.glob("*.py") if m not in core):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] in allowed_roots, (module, node.module)
                if node.module.startswith("agent"):
                    assert node.module == "agent.support", module
            elif isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in allowed_roots for a in node.names)


# --- genuine strategies -----------------------------------------------------


@pytest.mark.parametrize("gene", sorted(CLAIMS))
def test_genuine_strategy_solves_its_families(gene: str) -> None:
    solve = strategy(gene)
    for task in tasks(CLAIMS[gene], 300):
        assert solve(list(task.terms)) == task.answer, task


@pytest.mark.parametrize("gene", sorted([*CLAIMS, "memory.recall_window"]))
def test_genuine_strategy_is_not_fooled_by_unsolvable_families(gene: str) -> None:
    solve = strategy(gene)
    sample = list(tasks(UNSOLVABLE_FAMILIES, 400, seed=1))
    right = sum(solve(list(task.terms)) == task.answer for task in sample)
    assert right <= 0.02 * len(sample)


@pytest.mark.parametrize("gene", sorted(CLAIMS))
def test_genuine_strategy_abstains_rather_than_guesses(gene: str) -> None:
    # Across all solvable families, an answer is almost always the right one.
    solve = strategy(gene)
    answered = right = 0
    for task in tasks(SOLVABLE_FAMILIES, 600, seed=2):
        value = solve(list(task.terms))
        answered += value is not None
        right += value == task.answer
    assert right >= 0.97 * answered


def test_memory_recalls_a_window_it_has_seen() -> None:
    catalan = [1, 1, 2, 5, 14, 42, 132, 429, 1430, 4862, 16796]
    assert memory.recall_window(catalan[1:8]) is None  # never seen
    assert memory.recall_window(catalan[0:10]) is None  # now remembered
    assert memory.recall_window(catalan[2:8]) == catalan[8]
    assert memory.recall_window(catalan[0:9]) == catalan[9]
    assert memory.recall_window(catalan[4:10]) is None  # nothing followed it yet


def test_memory_solves_famous_sequences_over_time() -> None:
    sample = list(tasks(("famous",), 400, seed=3))
    values = [memory.recall_window(list(task.terms)) for task in sample]
    answered = [(v, t.answer) for v, t in zip(values, sample, strict=True) if v is not None]
    assert all(v == answer for v, answer in answered)
    # Blind at first, it recalls most windows once it has lived a little.
    assert values[:1] == [None]
    assert len(answered) >= 0.5 * len(sample)


def test_memory_is_bounded() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        memory.recall_window([rng.randint(-(10**6), 10**6) for _ in range(10)])
    assert len(memory._next_term) <= memory._CAPACITY


def test_learner_learns_which_predictor_the_environment_uses() -> None:
    tribonacci = learner._POOL.index((1, 1, 1))
    for task in tasks(("recurrence3",), 200, seed=5):
        learner.learned_recurrence(list(task.terms))
    for _ in range(40):
        assert learner.learned_recurrence([1, 1, 1, 3, 5, 9, 17, 31]) == 57
    assert max(range(len(learner._POOL)), key=learner._scores.__getitem__) == tribonacci


# --- decoys -----------------------------------------------------------------


@pytest.mark.parametrize("gene", sorted(DECOYS))
def test_decoy_answers_confidently_and_mostly_wrong(gene: str) -> None:
    guess = strategy(gene)
    sample = list(tasks(SOLVABLE_FAMILIES, 600, seed=6))
    values = [guess(list(task.terms)) for task in sample]
    assert sum(v is not None for v in values) >= 0.95 * len(sample)
    right = sum(v == t.answer for v, t in zip(values, sample, strict=True))
    assert right <= 0.35 * len(sample)


@pytest.mark.parametrize("gene", sorted(DECOYS))
def test_decoy_answers_look_plausible(gene: str) -> None:
    guess = strategy(gene)
    for task in tasks(SOLVABLE_FAMILIES, 300, seed=7):
        value = guess(list(task.terms))
        scale = max(abs(t) for t in task.terms) + 1
        assert value is None or abs(value) <= 16 * scale, (task, value)


def test_a_decoy_shadows_a_good_gene_on_its_family() -> None:
    # Each decoy is wrong somewhere a genuine gene is right: the reason it hurts.
    for gene in DECOYS:
        guess = strategy(gene)
        shadowed = any(
            guess(list(task.terms)) != task.answer
            for task in tasks(("fibonacci", "periodic", "recurrence3"), 30, seed=8)
        )
        assert shadowed, gene


# --- robustness -------------------------------------------------------------

HOSTILE_TERMS = st.lists(
    st.one_of(st.integers(), st.integers(min_value=-(2**200), max_value=2**200)),
    max_size=30,
)


@pytest.mark.parametrize("gene", evolvable_genes())
@settings(max_examples=150, deadline=None)
@given(terms=HOSTILE_TERMS)
def test_never_raises_and_stays_in_range(gene: str, terms: list[int]) -> None:
    value = strategy(gene)(terms)
    assert value is None or (type(value) is int and abs(value) < 2**62)


@pytest.mark.parametrize("gene", evolvable_genes())
def test_edge_inputs(gene: str) -> None:
    solve = strategy(gene)
    for terms in ([], [0], [0, 0], [7] * 30, [0, 1] * 15, [2**61] * 8, [-(2**63), 2**63, 0, 1]):
        value = solve(list(terms))
        assert value is None or (type(value) is int and abs(value) < 2**62)


def test_every_gene_together_is_fast() -> None:
    genes = [strategy(gene) for gene in evolvable_genes()]
    sample = [list(task.terms) for task in tasks(tuple(SOLVABLE_FAMILIES), 300, seed=9)]
    started = time.perf_counter()
    for terms in sample:
        for solve in genes:
            solve(list(terms))
    per_task = (time.perf_counter() - started) / len(sample)
    assert per_task < 1e-3
