from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from evolve_ai.core.fingerprint import code_hash, hash_bytes, tree_hash

pairs = st.lists(st.tuples(st.text(min_size=1, max_size=20), st.text("0123456789abcdef",
                                                                       min_size=32, max_size=32)),
                 unique_by=lambda p: p[0], max_size=10)


@given(pairs, st.randoms())
def test_tree_hash_ignores_order(items: list[tuple[str, str]], rng: object) -> None:
    shuffled = list(items)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert tree_hash(items) == tree_hash(shuffled)


def test_tree_hash_sees_paths_and_contents() -> None:
    digest = hash_bytes(b"x")
    assert tree_hash([("a", digest)]) != tree_hash([("b", digest)])
    assert tree_hash([("a", digest)]) != tree_hash([("a", hash_bytes(b"y"))])
    assert tree_hash([("ab", digest), ("c", digest)]) != tree_hash([("a", digest),
                                                                   ("bc", digest)])


def test_code_hash_covers_the_genome() -> None:
    sources = {"src/agent/a.py": hash_bytes(b"a")}
    assert code_hash(sources, hash_bytes(b"g1")) != code_hash(sources, hash_bytes(b"g2"))
    assert len(hash_bytes(b"")) == 32
