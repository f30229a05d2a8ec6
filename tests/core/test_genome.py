from __future__ import annotations

import contextlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve_ai.core import genome as g
from evolve_ai.core.catalogue import Catalogue
from evolve_ai.errors import GenomeError

state_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@st.composite
def genomes(draw: st.DrawFn, catalogue: Catalogue) -> g.Genome:
    files = []
    for entry in catalogue.files:
        if draw(st.booleans()):
            names = draw(st.lists(st.sampled_from(entry.functions), unique=True)) \
                if entry.functions else []
            files.append(g.FileGene(entry.path, draw(st.booleans()),
                                    tuple(sorted((n, draw(st.booleans())) for n in names))))
    state = draw(st.dictionaries(st.text(max_size=8), state_values, max_size=4))
    return g.Genome(tuple(files), draw(st.integers(0, 2**63 - 1)), state)


def plain(catalogue: Catalogue, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1,
        "files": [{"path": "src/agent/alpha.py", "active": True,
                   "functions": {"last": True, "double": False}}],
        "mutations": 3,
        "state": {"rate": 0.1},
    }
    base.update(overrides)
    return base


def pack(value: object) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_round_trip_and_canonical_bytes(catalogue: Catalogue, data: st.DataObject) -> None:
    genome = data.draw(genomes(catalogue))
    encoded = g.encode(genome)
    decoded = g.decode(encoded, catalogue)
    assert decoded == genome
    assert g.encode(decoded) == encoded
    # the same genome written in another order by an agent: same canonical bytes
    raw = genome.to_plain()
    shuffled = {"state": dict(reversed(list(raw["state"].items()))), "mutations": raw["mutations"],
                "files": list(reversed(raw["files"])), "schema": 1}
    assert g.encode(g.decode(pack(shuffled), catalogue)) == encoded


def test_missing_genes_are_inactive(catalogue: Catalogue) -> None:
    genome = g.decode(pack(plain(catalogue)), catalogue)
    expressed = {entry.path: names for entry, names in genome.expressed(catalogue)}
    assert expressed == {"src/agent/alpha.py": ("last",)}


def test_function_needs_its_file_active(catalogue: Catalogue) -> None:
    files = [{"path": "src/agent/alpha.py", "active": False, "functions": {"last": True}}]
    genome = g.decode(pack(plain(catalogue, files=files)), catalogue)
    assert genome.expressed(catalogue) == ()


def test_random_genome_is_seeded_and_complete(catalogue: Catalogue) -> None:
    first = g.random_genome(catalogue, random.Random(7))
    assert first == g.random_genome(catalogue, random.Random(7))
    assert [f.path for f in first.files] == [e.path for e in catalogue.files]
    assert g.decode(g.encode(first), catalogue) == first
    many = {g.encode(g.random_genome(catalogue, random.Random(i))) for i in range(50)}
    assert len(many) > 10


HOSTILE = [
    ("traversal", lambda c: plain(c, files=[{"path": "src/agent/../../etc/passwd",
                                             "active": True, "functions": {}}]),
     "escapes the agent directory"),
    ("absolute", lambda c: plain(c, files=[{"path": "/etc/passwd", "active": True,
                                            "functions": {}}]), "escapes"),
    ("backslash", lambda c: plain(c, files=[{"path": "src\\agent\\alpha.py", "active": True,
                                             "functions": {}}]), "escapes"),
    ("unknown file", lambda c: plain(c, files=[{"path": "src/agent/runtime.py", "active": True,
                                                "functions": {}}]), "not an evolvable file"),
    ("unknown function", lambda c: plain(c, files=[{"path": "src/agent/alpha.py", "active": True,
                                                    "functions": {"_hidden": True}}]),
     "'_hidden' is not a function"),
    ("int flag", lambda c: plain(c, files=[{"path": "src/agent/alpha.py", "active": True,
                                            "functions": {"last": 1}}]), "must be a boolean"),
    ("string active", lambda c: plain(c, files=[{"path": "src/agent/alpha.py", "active": "yes",
                                                 "functions": {}}]), "must be a boolean"),
    ("path type", lambda c: plain(c, files=[{"path": 7, "active": True}]), "must be a string"),
    ("duplicate", lambda c: plain(c, files=[{"path": "src/agent/beta.py", "active": True},
                                            {"path": "src/agent/beta.py", "active": False}]),
     "appears twice"),
    ("extra file key", lambda c: plain(c, files=[{"path": "src/agent/beta.py", "active": True,
                                                  "exec": "rm -rf /"}]), "unknown key 'exec'"),
    ("file not map", lambda c: plain(c, files=["src/agent/beta.py"]), "must be a map"),
    ("files not list", lambda c: plain(c, files={"a": 1}), "files must be a list"),
    ("bool schema", lambda c: plain(c, schema=True), "schema must be 1"),
    ("future schema", lambda c: plain(c, schema=2), "schema must be 1"),
    ("negative mutations", lambda c: plain(c, mutations=-1), "mutations must be"),
    ("float mutations", lambda c: plain(c, mutations=1.5), "mutations must be"),
    ("state list", lambda c: plain(c, state=[1, 2]), "state must be a map"),
    ("unknown top key", lambda c: {**plain(c), "payload": b"x"}, "unknown genome key"),
    ("not a map", lambda c: [1, 2, 3], "genome must be a map"),
    ("deep state", lambda c: plain(c, state={"a": [[[[[[[[[[1]]]]]]]]]]}), "nested deeper"),
    ("bytes keys in state", lambda c: plain(c, state={"a": {b"k": 2}}), "must be strings"),
    ("bytes file key", lambda c: plain(c, files=[{b"path": "x"}]), "unknown key"),
]


@pytest.mark.parametrize(("name", "make", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_genomes_are_rejected(catalogue: Catalogue, name: str, make: Any,
                                      message: str) -> None:
    value = make(catalogue)
    packed = msgpack.packb(value, use_bin_type=True, strict_types=False)
    with pytest.raises(GenomeError) as info:
        g.decode(packed, catalogue)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a msgpack genome"),
        (b"\xc1", "not a msgpack genome"),  # never-used byte
        (b"\xdd\xff\xff\xff\xff", "not a msgpack genome"),  # array claiming 4G elements
        (b"\x91" * 300_000 + b"\xc0", "genome is"),  # far over the size cap
        (b"\x91" * 5000 + b"\xc0", "not a msgpack genome"),  # nesting past the decoder's stack
        (b"\xd4\x05\x00", "not a msgpack genome"),  # an extension type
        (b"\x81\x01\x02", "not a msgpack genome"),  # int map key
        (b"\xa3ab", "not a msgpack genome"),  # truncated string
        (pack("x" * 5000), "not a msgpack genome"),  # string over the cap
        (b"\x80\x80", "not a msgpack genome"),  # trailing data
    ],
)
def test_malformed_bytes_are_rejected(catalogue: Catalogue, data: bytes, message: str) -> None:
    with pytest.raises(GenomeError) as info:
        g.decode(data, catalogue)
    assert message in str(info.value)


def test_every_truncation_is_rejected(catalogue: Catalogue) -> None:
    data = g.encode(g.random_genome(catalogue, random.Random(1)))
    for end in range(len(data)):
        with pytest.raises(GenomeError):
            g.decode(data[:end], catalogue)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_noise_never_escapes_as_another_error(catalogue: Catalogue, data: bytes) -> None:
    try:
        genome = g.decode(data, catalogue)
    except GenomeError:
        return
    assert g.decode(g.encode(genome), catalogue) == genome


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_flipped_bytes_are_rejected_or_valid(catalogue: Catalogue, data: st.DataObject) -> None:
    encoded = bytearray(g.encode(g.random_genome(catalogue, random.Random(3))))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(GenomeError):
        g.decode(bytes(encoded), catalogue)


def test_genes_of_another_template_version_are_ignored(catalogue: Catalogue) -> None:
    """A module or function that another version has (and this one lacks) is kept as
    written (its hash does not change) but never expressed; one that no version ever
    had is still refused."""
    known = {**catalogue.genes(), "src/agent/gone.py": ("old",),
             "src/agent/alpha.py": (*catalogue.genes()["src/agent/alpha.py"], "lost")}
    tolerant = catalogue.retiring(known)
    files = [{"path": "src/agent/alpha.py", "active": True,
              "functions": {"last": True, "lost": True}},
             {"path": "src/agent/gone.py", "active": True, "functions": {"old": True}}]
    data = pack(plain(catalogue, files=files))
    genome = g.decode(data, tolerant)
    assert g.decode(g.encode(genome), tolerant) == genome  # as written, canonically
    only_current = g.decode(pack(plain(catalogue, files=[
        {"path": "src/agent/alpha.py", "active": True, "functions": {"last": True}}])),
        catalogue)
    assert genome.expressed(catalogue) == only_current.expressed(catalogue)
    assert g.expression(genome, catalogue) == {"src/agent/alpha.py",
                                               "src/agent/alpha.py:last"}
    for strict in (catalogue, tolerant):
        with pytest.raises(GenomeError, match="never"):
            g.decode(pack(plain(catalogue, files=[
                {"path": "src/agent/never.py", "active": True, "functions": {}}])), strict)
        with pytest.raises(GenomeError, match="never"):
            g.decode(pack(plain(catalogue, files=[
                {"path": "src/agent/alpha.py", "active": True,
                 "functions": {"never": True}}])), strict)
    with pytest.raises(GenomeError, match=r"gone\.py"):
        g.decode(pack(plain(catalogue, files=files[1:])), catalogue)
