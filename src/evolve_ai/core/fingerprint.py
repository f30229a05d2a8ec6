"""Content fingerprints (xxh3_128): of one file, of a tree, of an agent's code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import xxhash


def hash_bytes(data: bytes) -> str:
    """The hex xxh3_128 digest of ``data``."""
    return xxhash.xxh3_128_hexdigest(data)


def tree_hash(file_hashes: Iterable[tuple[str, str]]) -> str:
    """One digest over (path, file digest) pairs, independent of their order.

    Paths are part of the digest so that renaming a file changes it; NUL and
    newline separators cannot occur in a path or a hex digest, so no two
    different trees serialize alike.
    """
    hasher = xxhash.xxh3_128()
    for path, digest in sorted(file_hashes):
        hasher.update(path.encode("utf-8", "surrogateescape"))
        hasher.update(b"\0")
        hasher.update(digest.encode("ascii"))
        hasher.update(b"\n")
    return hasher.hexdigest()


def code_hash(source_hashes: Mapping[str, str], genome_hash: str) -> str:
    """The code hash of an agent: its whole source tree plus its genome (docs/design.md)."""
    return tree_hash([*source_hashes.items(), ("genome.bin", genome_hash)])
