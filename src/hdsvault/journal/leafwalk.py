"""The verifier's compiled walk over a SQLite journal, range by range, on every core.

``journal verify`` must rebuild every entry's leaf bytes from its columns, hash them and
rebuild the tree. Done in Python, fetching the rows alone costs several times the SHA-256 of
the same bytes (docs/journal.md, "Speed"). :mod:`hdsvault.journal._leafwalk` (C, built by
``scripts/build-native.sh``) does the same work straight from the database file, without the
GIL, so the ranges of a log are walked by one thread per core.

It only confirms: a range it cannot reproduce byte for byte comes back not ``clean`` and the
verifier walks it again in Python, which names the problem. Ranges are aligned subtrees of
:data:`RANGE` entries, so each one's compact range continues the log's (see
:meth:`hdsvault.journal.merkle.CompactRange.extend_range`).

Only SQLite files are walked this way; PostgreSQL (and an in-memory SQLite database) keeps the
Python walk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Connection

try:
    from hdsvault.journal import _leafwalk
except ImportError:  # not built (no compiler or headers): the Python walk is used
    _leafwalk = None  # type: ignore[assignment]

RANGE = 1 << 14
"""Entries per range: a power of two, so that every range is an aligned subtree."""

HASH = 32

WORKERS: int | None = None
"""Ranges walked at a time; None: one per core (the benchmark also measures one)."""


@dataclass(frozen=True, slots=True)
class WalkedRange:
    """What the compiled walk found in entries ``[start, end)`` of a log."""

    start: int
    end: int
    clean: bool
    """Every entry present, rebuilt, hashed and equal to its stored leaf hash."""
    entries: int
    bytes_hashed: int
    pruned_max: int
    """The highest index emptied by retention (its stored hash stood in), or -1."""
    nodes: tuple[bytes, ...]
    """Compact range of the whole range (one node per set bit of its width)."""
    nodes_at: dict[int, tuple[bytes, ...]]
    """For each requested size inside the range, the compact range of ``[start, size)``."""


def available() -> bool:
    return _leafwalk is not None


def database_file(conn: Connection) -> str | None:
    """The SQLite file behind ``conn`` if the compiled walk can read it, else None."""
    url = conn.engine.url
    if url.get_backend_name() != "sqlite" or _leafwalk is None:
        return None
    name = url.database or ""
    if name in ("", ":memory:") or name.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return name


def _split(blob: bytes) -> tuple[bytes, ...]:
    return tuple(blob[i : i + HASH] for i in range(0, len(blob), HASH))


def _walk(path: str, log_id: str, start: int, end: int, sizes: Sequence[int]) -> WalkedRange:
    assert _leafwalk is not None
    inside = [s for s in sizes if start < s <= end]
    clean, entries, hashed, pruned_max, nodes, at = _leafwalk.walk(path, log_id, start, end, inside)
    nodes_at: dict[int, tuple[bytes, ...]] = {}
    offset = 0
    for size in inside if clean else ():
        width = (size - start).bit_count() * HASH
        nodes_at[size] = _split(at[offset : offset + width])
        offset += width
    return WalkedRange(
        start, end, clean, entries, hashed, pruned_max, _split(nodes) if clean else (), nodes_at
    )


def walk_ranges(
    path: str, log_id: str, end: int, sizes: Sequence[int], workers: int | None = None
) -> Iterator[WalkedRange]:
    """Walk ``[0, end)`` of ``log_id`` in ranges of :data:`RANGE`, yielded in order.

    ``sizes``: the sorted sizes whose roots the caller will check (checkpoints). The ranges
    run ``workers`` at a time (default :data:`WORKERS`, else one per core); each opens its
    own read-only connection, which sees at least what the caller's transaction saw (entries
    below a signed size never change in a sound log).
    """
    bounds = [(a, min(a + RANGE, end)) for a in range(0, end, RANGE)]
    workers = workers or WORKERS or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(lambda b: _walk(path, log_id, b[0], b[1], sizes), bounds)
