"""The template's genetics: codec, operators, policy, atomic writes."""

import math
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest
from agent import genetics
from agent.genetics import Genome, Trial
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.template.template_helpers import evolvable_genes, genome_for

from evolve_ai.core import genome as genome_codec
from evolve_ai.services import template as template_service

GENES = evolvable_genes()


def _flags(genome: Genome) -> dict[tuple[str, str | None], bool]:
    return genetics._flags(genome)


def _structure(genome: Genome) -> dict[str, set[str]]:
    return {f["path"]: set(f["functions"]) for f in genome["files"]}


def _assert_valid(genome: Genome | None) -> Genome:
    assert genome is not None
    assert genetics.decode_genome(genetics.encode_genome(genome)) == genome
    return genome


def _random_genome(seed: int) -> Genome:
    rng = random.Random(seed)
    return genome_for([gene for gene in GENES if rng.random() < 0.4])


@pytest.fixture
def genome_file(tmp_path: Path) -> Path:
    path = tmp_path / "genome.bin"
    genetics.write_genome(path, genome_for(["arithmetic.constant_difference"]))
    return path


# --- codec ------------------------------------------------------------------


def test_encoding_is_canonical() -> None:
    genome = _random_genome(1)
    shuffled = Genome(
        schema=1,
        files=[
            genetics.FileGene(
                path=f["path"],
                active=f["active"],
                functions=dict(reversed(list(f["functions"].items()))),
            )
            for f in reversed(genome["files"])
        ],
        mutations=0,
        state={"b": 1, "a": {"y": 2, "x": 3}},
    )
    genome["state"] = {"a": {"x": 3, "y": 2}, "b": 1}
    assert genetics.encode_genome(genome) == genetics.encode_genome(shuffled)


def test_decoding_matches_the_design_format() -> None:
    raw = {
        "schema": 1,
        "files": [{"path": "src/agent/x.py", "active": True, "functions": {"f": False}}],
        "mutations": 3,
        "state": {"rate": 0.1},
    }
    genome = genetics.decode_genome(msgpack.packb(raw, use_bin_type=True))
    assert genome == raw


@pytest.mark.parametrize(
    "change",
    [
        {"schema": 2},
        {"schema": True},
        {"mutations": -1},
        {"files": [{"path": "/abs.py", "active": True, "functions": {}}]},
        {"files": [{"path": "src/../x.py", "active": True, "functions": {}}]},
        {"files": [{"path": "src/agent/x.py", "active": 1, "functions": {}}]},
        {"files": [{"path": "src/agent/x.py", "active": True, "functions": {"f": 1}}]},
        {"files": [{"path": "src/agent/x.py", "active": True, "functions": {"_f": True}}]},
        {"state": {"deep": [[[[[[[[[[[0]]]]]]]]]]]}},
    ],
)
def test_invalid_genomes_are_rejected(change: dict[str, object]) -> None:
    raw = {"schema": 1, "files": [], "mutations": 0, "state": {}} | change
    assert genetics.decode_genome(msgpack.packb(raw, use_bin_type=True)) is None


@pytest.mark.parametrize("data", [b"", b"\xc1", b"garbage", b"\x93\x01\x02\x03", b"\x00" * 100])
def test_garbage_bytes_are_rejected(data: bytes) -> None:
    assert genetics.decode_genome(data) is None


def test_oversized_genome_is_rejected() -> None:
    assert genetics.decode_genome(b"\x00" * (genetics.MAX_BYTES + 1)) is None


# --- operators --------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), rate=st.floats(0.0, 1.0))
def test_flip_functions_keeps_the_genome_valid(seed: int, rate: float) -> None:
    genome = _random_genome(seed)
    mutant = _assert_valid(genetics.flip_functions(genome, random.Random(seed), rate))
    assert _structure(mutant) == _structure(genome)
    changed = genetics.changes(genome, mutant)
    assert changed, "a mutation must change something"
    assert all(name is not None for _, name, _ in changed), "only function flags flip"


def test_toggle_module_flips_exactly_one_module() -> None:
    genome = _random_genome(2)
    mutant = _assert_valid(genetics.toggle_module(genome, random.Random(2)))
    changed = genetics.changes(genome, mutant)
    assert len(changed) == 1
    assert changed[0][1] is None


def test_recombination_takes_each_file_from_one_parent() -> None:
    mother, father = _random_genome(3), _random_genome(4)
    allowed = genetics.allowed_genes(mother, {})
    children = [genetics.recombine(mother, father, random.Random(s), allowed) for s in range(30)]
    by_path = {
        parent: {f["path"]: f for f in genome["files"]}
        for parent, genome in (("mother", mother), ("father", father))
    }
    from_father = 0
    for child in children:
        _assert_valid(child)
        assert _structure(child) == _structure(mother)
        for gene in child["files"]:
            assert gene in (by_path["mother"][gene["path"]], by_path["father"][gene["path"]])
            from_father += gene != by_path["mother"][gene["path"]]
    assert from_father > 0


def test_recombination_never_imports_foreign_genes() -> None:
    mine = genome_for(["arithmetic.constant_difference"])
    peer = genome_for(["arithmetic.constant_difference"])
    peer["files"].append(
        genetics.FileGene(path="src/agent/evil.py", active=True, functions={"x": True})
    )
    peer["files"][0]["functions"]["smuggled"] = True
    allowed = genetics.allowed_genes(mine, {})
    for seed in range(20):
        child = genetics.recombine(mine, peer, random.Random(seed), allowed)
        assert _structure(child) == _structure(mine)


def test_uptake_adds_catalogue_genes_switched_off() -> None:
    genome = genome_for(["arithmetic.constant_difference"])
    catalogue = {
        "src/agent/arithmetic.py": ("constant_difference", "average_step", "newer"),
        "src/agent/novel.py": ("fresh",),
    }
    taken = _assert_valid(genetics.uptake(genome, catalogue))
    flags = _flags(taken)
    assert flags["src/agent/arithmetic.py", "newer"] is False
    assert flags["src/agent/novel.py", None] is False
    assert flags["src/agent/novel.py", "fresh"] is False
    assert flags["src/agent/arithmetic.py", "constant_difference"] is True
    assert {k: v for k, v in flags.items() if k in _flags(genome)} == _flags(genome)


def test_catalogue_is_read_and_garbage_is_no_information(tmp_path: Path) -> None:
    path = tmp_path / genetics.CATALOGUE_FILE
    good = {"files": [{"path": "src/agent/a.py", "functions": ["f", "g"]}], "core": ["x"]}
    path.write_bytes(msgpack.packb(good, use_bin_type=True))
    assert genetics.read_catalogue(tmp_path) == {"src/agent/a.py": ("f", "g")}
    for garbage in (b"\xc1junk", msgpack.packb({"files": [{"path": "../a.py", "functions": []}]})):
        path.write_bytes(garbage)
        assert genetics.read_catalogue(tmp_path) == {}
    assert genetics.read_catalogue(tmp_path / "missing") == {}
    assert genetics.read_catalogue(None) == {}


def test_rate_adapts_within_bounds() -> None:
    rate = genetics.INITIAL_RATE
    assert genetics.adapt_rate(rate, success=True) > rate > genetics.adapt_rate(rate, False)
    for _ in range(100):
        rate = genetics.adapt_rate(rate, success=False)
    assert rate == genetics.MIN_RATE
    for _ in range(100):
        rate = genetics.adapt_rate(rate, success=True)
    assert rate == genetics.MAX_RATE


# --- policy -----------------------------------------------------------------


def _policy(path: Path, commons: Path | None = None) -> genetics.Policy:
    return genetics.Policy(path, commons, random.Random(0), patience=2)


def _feed(policy: genetics.Policy, *fitness: float) -> list[bool]:
    return [policy.observe(f) for f in fitness]


def test_policy_waits_then_mutates(genome_file: Path) -> None:
    before = genetics.read_genome(genome_file)
    assert _feed(_policy(genome_file), 0.5, 0.5) == [False, True]
    after = _assert_valid(genetics.read_genome(genome_file))
    assert before is not None
    assert after["mutations"] == 1
    assert genetics.changes(before, after)
    trial = Trial.from_state(after["state"]["trial"])
    assert trial is not None
    assert trial.baseline == 0.5


def test_policy_reverts_a_mutation_that_hurt(genome_file: Path) -> None:
    original = genetics.read_genome(genome_file)
    _feed(_policy(genome_file), 0.5, 0.5)
    # A fresh policy: the agent was restarted after it rewrote its genome.
    assert _feed(_policy(genome_file), 0.2, 0.2) == [False, True]
    reverted = _assert_valid(genetics.read_genome(genome_file))
    assert original is not None
    assert _flags(reverted) == _flags(original)
    assert "trial" not in reverted["state"]
    assert reverted["mutations"] == 2
    assert reverted["state"]["rate"] < genetics.INITIAL_RATE


def test_policy_keeps_a_mutation_that_helped(genome_file: Path) -> None:
    policy = _policy(genome_file)
    _feed(policy, 0.5, 0.5)
    mutant = genetics.read_genome(genome_file)
    assert mutant is not None
    # Kept, and measured as it is for one more round: no rewrite, no restart, so the
    # agent's fitness goes on being the kept genome's.
    assert _feed(policy, 0.8, 0.8) == [False, False]
    assert genome_file.read_bytes() == genetics.encode_genome(mutant)
    assert _feed(policy, 0.8, 0.8) == [False, True]
    kept = _assert_valid(genetics.read_genome(genome_file))
    trial = Trial.from_state(kept["state"]["trial"])
    assert trial is not None
    assert trial.baseline == 0.8
    # The new trial starts from the kept mutant: undoing it gives the mutant back.
    assert _flags(genetics.apply_changes(kept, trial.undo)) == _flags(mutant)
    assert kept["state"]["rate"] > genetics.INITIAL_RATE


def test_policy_ignores_non_finite_fitness(genome_file: Path) -> None:
    before = genome_file.read_bytes()
    assert _feed(_policy(genome_file), math.nan, math.inf, -math.inf) == [False] * 3
    assert genome_file.read_bytes() == before


def test_policy_never_overwrites_an_unreadable_genome(tmp_path: Path) -> None:
    path = tmp_path / "genome.bin"
    path.write_bytes(b"not a genome")
    assert _feed(_policy(path), 0.1, 0.1) == [False, False]
    assert path.read_bytes() == b"not a genome"


def test_policy_recombines_with_published_elites(tmp_path: Path) -> None:
    commons = tmp_path / "commons"
    (commons / genetics.ELITE_DIR).mkdir(parents=True)
    genetics.write_genome(commons / genetics.ELITE_DIR / "best.bin", genome_for(GENES))
    path = tmp_path / "agent" / "genome.bin"
    path.parent.mkdir()
    # At the lowest rate a bit-flip or a toggle changes one or two flags;
    # only crossover with the all-on elite switches many on at once. (Every
    # module on, no function: each flip changes what the genome expresses.)
    empty = genome_for([])
    empty = genetics._with_files(empty, [{**f, "active": True} for f in empty["files"]])
    start = genetics._with_state(empty, rate=genetics.MIN_RATE)
    sizes = []
    for seed in range(40):
        genetics.write_genome(path, start)
        genetics.Policy(path, commons, random.Random(seed), patience=1).observe(0.5)
        child = _assert_valid(genetics.read_genome(path))
        sizes.append(len(genetics.changes(start, child)))
    assert max(sizes) > 4
    assert sorted(sizes)[len(sizes) // 2] <= 2


def test_many_writes_stay_atomic_and_touch_only_genome_bin(genome_file: Path) -> None:
    policy = genetics.Policy(genome_file, None, random.Random(3), patience=1)
    rng = random.Random(4)
    writes = 0
    for _ in range(200):
        before = _assert_valid(genetics.read_genome(genome_file))
        if policy.observe(rng.random()):
            writes += 1
            after = _assert_valid(genetics.read_genome(genome_file))
            assert genetics.expression(after) != genetics.expression(before), "a vain rewrite"
    assert [p.name for p in genome_file.parent.iterdir()] == ["genome.bin"]
    final = genetics.read_genome(genome_file)
    assert final is not None
    assert final["mutations"] == writes >= 10
    assert _structure(final) == _structure(genome_for([]))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000), st.booleans())
def test_a_mutation_always_changes_what_is_expressed(genes: int, seed: int,
                                                    with_peer: bool) -> None:
    genome = _random_genome(genes)
    peer = _random_genome(genes + 1) if with_peer else None
    mutant = genetics.mutate(genome, random.Random(seed), 0.5, {}, peer=peer, owner="me")
    mutant = _assert_valid(mutant)
    assert genetics.expression(mutant) != genetics.expression(genome)
    trial = Trial.from_state(mutant["state"]["trial"])
    assert trial is not None and trial.owner == "me"
    assert _flags(genetics.apply_changes(mutant, trial.undo)) == _flags(
        genetics.uptake(genome, {}))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_switch_gene_changes_one_function_or_swaps_two_siblings(genes: int, seed: int) -> None:
    genome = _random_genome(genes)
    switched = _assert_valid(genetics.switch_gene(genome, random.Random(seed)))
    before, after = genetics.expression(genome), genetics.expression(switched)
    changed = before ^ after
    assert len(changed) in (1, 2)
    if len(changed) == 2:  # a swap: one off, one on, in the same module
        assert len(before - after) == 1 and len(after - before) == 1
        assert len({path for path, _ in changed}) == 1


def _with_fails(genome: Genome, fails: int, **state: Any) -> Genome:
    """`genome` after `fails` fruitless trials, every neighbour known to be worse (so
    that it may rest)."""
    genome = genetics._with_state(genome, fails=fails, **state)
    return genetics._remember(genome, genetics.neighbours(genome))


def test_policy_rests_after_fruitless_trials(tmp_path: Path) -> None:
    path = tmp_path / "genome.bin"
    start = genome_for(["polynomial.cubic"])
    rewrites = {}
    for fails in (0, genetics.MAX_FAILS):
        count = 0
        for seed in range(200):
            genetics.write_genome(path, _with_fails(start, fails))
            count += genetics.Policy(path, None, random.Random(seed), patience=1).observe(0.5)
        rewrites[fails] = count
    assert rewrites[0] == 200  # nothing failed yet: always try
    expected = 200 / (1 + genetics.MAX_FAILS) ** genetics.REST_POWER
    assert rewrites[genetics.MAX_FAILS] <= 4 * expected + 3


def test_a_revert_counts_a_fruitless_trial(genome_file: Path) -> None:
    policy = _policy(genome_file)
    _feed(policy, 0.5, 0.5)
    mutant = genetics.read_genome(genome_file)
    assert mutant is not None
    assert _feed(_policy(genome_file), 0.2, 0.2) == [False, True]
    reverted = _assert_valid(genetics.read_genome(genome_file))
    assert reverted["state"]["fails"] == 1
    # Written with the revert: a restarted agent still knows the mutant was worse.
    assert genetics.tried(reverted) == {genetics.expression_key(mutant)}


def _parents_pending_mutant(path: Path) -> Genome:
    """A genome whose trial (baseline 0.9) its parent started, written at ``path``."""
    parent = genome_for(["polynomial.cubic"])
    mutant = _assert_valid(genetics.mutate(genetics._with_state(parent, fails=genetics.MAX_FAILS),
                                           random.Random(1), 0.9, {}, owner="parent"))
    mutant = genetics._remember(mutant, genetics.neighbours(mutant))  # it may rest
    genetics.write_genome(path, mutant)
    return mutant


def test_a_parents_trial_is_not_the_childs(tmp_path: Path) -> None:
    """A child inherits its parent's genome, pending trial included: it measures it, never
    reverts it on the strength of the parent's baseline."""
    path = tmp_path / "genome.bin"
    mutant = _parents_pending_mutant(path)
    written = path.read_bytes()
    kept = 0
    for seed in range(50):
        child = genetics.Policy(path, None, random.Random(seed), patience=1, owner="child")
        if not child.observe(0.1):  # far below the parent's baseline of 0.9
            kept += 1
            assert path.read_bytes() == written
        else:
            after = _assert_valid(genetics.read_genome(path))
            trial = Trial.from_state(after["state"]["trial"])
            assert trial is not None and trial.owner == "child" and trial.baseline == 0.1
            genetics.write_genome(path, mutant)
            written = path.read_bytes()
    assert kept > 40  # resting (fails at its maximum), not reverting


def test_keeping_a_state_change_writes_nothing(tmp_path: Path) -> None:
    """State alone (a dropped trial, a rest) is no rewrite: it would cost a restart."""
    path = tmp_path / "genome.bin"
    genome = _with_fails(genome_for(["polynomial.cubic"]), genetics.MAX_FAILS,
                         trial=Trial(0.3, (), "someone else").to_state())
    genetics.write_genome(path, genome)
    before = path.read_bytes()
    policy = genetics.Policy(path, None, random.Random(0), patience=1, owner="me")
    # seed 0 rests three times (each time with odds 1 - 1/(1+MAX_FAILS)**REST_POWER)
    assert [policy.observe(0.5) for _ in range(3)] == [False, False, False]
    assert path.read_bytes() == before


def test_a_hopeless_mutant_is_reverted_early(tmp_path: Path) -> None:
    path = tmp_path / "genome.bin"
    original = genome_for(["polynomial.cubic"])
    genetics.write_genome(path, original)
    policy = genetics.Policy(path, None, random.Random(0), patience=8, owner="me")
    assert [policy.observe(0.5) for _ in range(8)] == [False] * 7 + [True]
    # Restarted on its mutant, which expresses a decoy: judged after EARLY_FEEDBACKS.
    policy = genetics.Policy(path, None, random.Random(0), patience=8, owner="me")
    hopeless = 0.5 - genetics.EARLY_DROP - 0.05
    early = genetics.EARLY_FEEDBACKS
    assert [policy.observe(hopeless) for _ in range(early)] == [False] * (early - 1) + [True]
    reverted = _assert_valid(genetics.read_genome(path))
    assert _flags(reverted) == _flags(original)
    assert reverted["state"]["fails"] == 1


def test_a_mutant_merely_worse_gets_its_full_trial(tmp_path: Path) -> None:
    path = tmp_path / "genome.bin"
    genetics.write_genome(path, genome_for(["polynomial.cubic"]))
    policy = genetics.Policy(path, None, random.Random(0), patience=8, owner="me")
    assert [policy.observe(0.5) for _ in range(8)][-1]
    mutant = path.read_bytes()
    policy = genetics.Policy(path, None, random.Random(0), patience=8, owner="me")
    worse = 0.5 - genetics.EARLY_DROP + 0.05
    assert [policy.observe(worse) for _ in range(8)] == [False] * 7 + [True]
    assert path.read_bytes() != mutant  # reverted, but only at the end of its trial


def test_early_judgement_is_for_own_trials_only(tmp_path: Path) -> None:
    path = tmp_path / "genome.bin"
    _parents_pending_mutant(path)
    before = path.read_bytes()
    child = genetics.Policy(path, None, random.Random(0), patience=8, owner="child")
    assert not any(child.observe(0.1) for _ in range(genetics.EARLY_FEEDBACKS))
    assert path.read_bytes() == before


# --- novel genes --------------------------------------------------------------


def _catalogue_of(genome: Genome, **added: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The genome's own genes as a catalogue, with ``added`` modules (path stem: names)."""
    catalogue = {f["path"]: tuple(f["functions"]) for f in genome["files"]}
    for stem, names in added.items():
        path = f"src/agent/{stem}.py"
        catalogue[path] = tuple(sorted({*catalogue.get(path, ()), *names}))
    return catalogue


def test_a_resting_agent_tries_a_new_gene_once_as_a_trial() -> None:
    """However long its rest, an agent tries one gene that a newer template version
    brought; its other new genes are taken in, switched off; a revert undoes the try."""
    resting = _with_fails(genome_for(["polynomial.cubic"]), genetics.MAX_FAILS)
    catalogue = _catalogue_of(resting, invented_rule=("rule",), polynomial=("quartic",))
    assert genetics.novel(resting, catalogue) == [("src/agent/invented_rule.py", "rule"),
                                                 ("src/agent/polynomial.py", "quartic")]
    tried = {}
    for seed in range(20):
        child = _assert_valid(genetics.step(resting, 0.4, random.Random(seed), catalogue,
                                            owner="me"))
        new = genetics.expression(child) - genetics.expression(resting)
        assert len(new) == 1 and genetics.novel(child, catalogue) == []
        [gene] = new
        tried[gene] = child
        trial = Trial.from_state(child["state"]["trial"])
        assert trial is not None and trial.owner == "me" and trial.baseline == 0.4
        undone = genetics.revert(child, trial)
        assert genetics.expression(undone) == genetics.expression(resting)
    # Either new gene may be the one tried; a new module is switched on with it alone.
    assert set(tried) == {("src/agent/invented_rule.py", "rule"),
                          ("src/agent/polynomial.py", "quartic")}
    assert ("src/agent/polynomial.py", "cubic") in genetics.expression(
        tried["src/agent/polynomial.py", "quartic"])


def test_a_gene_tried_once_is_not_novel_again() -> None:
    genome = _with_fails(genome_for(["polynomial.cubic"]), genetics.MAX_FAILS)
    catalogue = _catalogue_of(genome, invented_rule=("rule",))
    child = _assert_valid(genetics.step(genome, 0.4, random.Random(0), catalogue, owner="me"))
    trial = Trial.from_state(child["state"]["trial"])
    assert trial is not None
    reverted = genetics.step(child, 0.1, random.Random(0), catalogue, owner="me")
    assert genetics.expression(reverted) == genetics.expression(genome)
    assert genetics.novel(reverted, catalogue) == []
    # From now on it rests as before: no new trial at every feedback.
    rested = [genetics.step(_with_fails(reverted, genetics.MAX_FAILS), 0.4,
                            random.Random(seed), catalogue, owner="me") for seed in range(50)]
    assert sum(genetics.expression(g) != genetics.expression(genome) for g in rested) <= 5


def test_without_a_catalogue_nothing_is_novel() -> None:
    genome = genome_for(["polynomial.cubic"])
    assert genetics.novel(genome, {}) == []
    assert genetics.try_novel(genome, random.Random(0), 0.5, {}) is None


# --- the neighbourhood memory ---------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_neighbours_are_one_switch_away_and_include_every_switch(genes: int, seed: int
                                                                 ) -> None:
    genome = _random_genome(genes)
    found = genetics.neighbours(genome)
    own = genetics.expression(genome)
    for key, move in found.items():
        child = _assert_valid(genetics.moved(genome, move))
        assert key == genetics.expression_key(child) != genetics.expression_key(genome)
        changed = _flags(child).items() ^ _flags(genome).items()
        assert len({path for (path, _), _ in changed}) == 1  # one module touched
        assert len(genetics.expression(child) ^ own) >= 1
    for draw in (genetics.switch_gene, genetics.toggle_module):
        drawn = draw(genome, random.Random(seed))
        if genetics.expression(drawn) != own:
            assert genetics.expression_key(drawn) in found


def _reverted(score: float, seed: int = 3) -> tuple[Genome, Genome]:
    """(the rejected mutant, the genome its revert gives back), baseline 0.5."""
    start = genome_for(["polynomial.cubic", "recurrence.affine"])
    mutant = _assert_valid(genetics.mutate(start, random.Random(seed), 0.5, {}, owner="me"))
    trial = Trial.from_state(mutant["state"]["trial"])
    assert trial is not None
    return mutant, _assert_valid(genetics.revert(mutant, trial, score))


def test_a_mutant_clearly_worse_is_not_drawn_again() -> None:
    mutant, reverted = _reverted(0.5 - genetics.CLEARLY_WORSE - 0.01)
    assert genetics.tried(reverted) == {genetics.expression_key(mutant)}
    again = [genetics.mutate(reverted, random.Random(seed), 0.5, {}, owner="me")
             for seed in range(300)]
    assert all(g is not None and genetics.expression(g) != genetics.expression(mutant)
               for g in again)


def test_a_mutant_within_noise_of_its_baseline_may_be_tried_again() -> None:
    """A plateau is crossed by retrying near-neutral moves: noise decides their fate."""
    mutant, reverted = _reverted(0.5 - genetics.CLEARLY_WORSE / 2)
    assert genetics.tried(reverted) == frozenset()
    again = [genetics.mutate(reverted, random.Random(seed), 0.5, {}, owner="me")
             for seed in range(300)]
    assert any(g is not None and genetics.expression(g) == genetics.expression(mutant)
               for g in again)


def test_an_agent_rests_only_once_every_neighbour_is_known_to_be_worse() -> None:
    start = genetics._with_state(genome_for(["polynomial.cubic"]), fails=genetics.MAX_FAILS)
    keys = list(genetics.neighbours(start))
    almost = genetics._remember(start, keys[1:])
    moved = [genetics.step(almost, 0.5, random.Random(seed), {}, owner="me")
             for seed in range(50)]
    # Restless while one neighbour is unknown, and that neighbour is the one drawn when
    # every other draw is known to be worse.
    assert all(genetics.expression(g) != genetics.expression(start) for g in moved)
    assert sum(genetics.expression_key(g) == keys[0] for g in moved) >= 10
    spent = genetics._remember(start, keys)
    assert genetics.spent(spent) and not genetics.spent(almost)
    rested = [genetics.step(spent, 0.5, random.Random(seed), {}, owner="me")
              for seed in range(200)]
    woke = [g for g in rested if genetics.expression(g) != genetics.expression(start)]
    assert 1 <= len(woke) <= 4 * 200 / (1 + genetics.MAX_FAILS) ** genetics.REST_POWER + 3
    # One that wakes up may retry any neighbour: what noise condemned may be good.
    for genome in woke:
        trial = Trial.from_state(genome["state"]["trial"])
        assert trial is not None
        restored = genetics.revert(genome, trial, 0.5)
        assert genetics.tried(restored) == frozenset()


def test_what_was_found_worse_elsewhere_says_nothing_here() -> None:
    mutant, reverted = _reverted(0.1)
    elsewhere = genetics.apply_changes(reverted, [("src/agent/learner.py", None, True),
                                                  ("src/agent/learner.py",
                                                   "learned_recurrence", True)])
    assert genetics.expression(elsewhere) != genetics.expression(reverted)
    assert genetics.tried(elsewhere) == frozenset()
    assert genetics.tried(reverted) == {genetics.expression_key(mutant)}


def test_elite_peers_with_the_same_expression_pool_what_they_found_worse() -> None:
    _, mine = _reverted(0.1, seed=3)
    _, theirs = _reverted(0.1, seed=4)
    assert genetics.tried(theirs) != genetics.tried(mine)
    pooled = genetics.pooled(mine, theirs)
    assert genetics.tried(pooled) == genetics.tried(mine) | genetics.tried(theirs)
    other = genome_for(["polynomial.quadratic"])
    assert genetics.pooled(mine, other) == mine
    assert genetics.pooled(mine, None) == mine


def test_the_memory_is_bounded_and_garbage_in_it_is_ignored() -> None:
    start = genome_for(["polynomial.cubic"])
    full = _assert_valid(genetics._remember(start, range(10 * genetics.MAX_TRIED)))
    assert len(genetics.tried(full)) == genetics.MAX_TRIED
    # The newest are kept (a full memory still learns), and a full memory may rest
    # even where a genome has more neighbours than it can hold.
    assert 10 * genetics.MAX_TRIED - 1 in genetics.tried(full)
    learnt = genetics._remember(full, [-1 % 2**32])
    assert -1 % 2**32 in genetics.tried(learnt) and 0 not in genetics.tried(learnt)
    assert len(genetics.tried(learnt)) == genetics.MAX_TRIED
    assert genetics.spent(full)
    # The orchestrator's own decoder takes a genome carrying the memory.
    catalogue = template_service.load(template_service.bundled_template())[1]
    assert genome_codec.decode(genetics.encode_genome(full), catalogue).state["tried"]
    key = genetics.expression_key(start)
    for garbage in ({"at": key, "moves": "x"}, {"at": key, "moves": [1.5, "a", None]},
                    ["not", "a", "map"], {"at": "x", "moves": [1]}):
        genome = _assert_valid(genetics._with_state(start, tried=garbage))
        assert genetics.tried(genome) == frozenset()
        assert genetics.mutate(genome, random.Random(0), 0.5, {}) is not None
