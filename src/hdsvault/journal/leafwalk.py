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

SQLite files are read by the module itself; PostgreSQL sends each range as a binary ``COPY``
that the module parses (the network read is Python's, the rest is not). An in-memory SQLite
database keeps the Python walk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Connection, Engine

from hdsvault.journal.store import LEAF_KEYS

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


RawWalk = tuple[bool, int, int, int, bytes, bytes]
RangeReader = Callable[[int, int, Sequence[int]], RawWalk]
"""Walks entries ``[start, end)`` of one log, reporting the compact ranges at ``sizes``."""


def reader(conn: Connection, log_id: str) -> RangeReader | None:
    """How the compiled walk reads ``log_id`` behind ``conn``, or None (the Python walk).

    SQLite: the module opens the database file itself. PostgreSQL: one binary ``COPY`` per
    range, on a pooled connection, parsed by the module. An in-memory SQLite database (or a
    module that was not built) is left to the Python walk.
    """
    if _leafwalk is None:
        return None
    url = conn.engine.url
    backend = url.get_backend_name()
    if backend == "postgresql":
        return partial(_copy_walk, conn.engine, log_id)
    if backend != "sqlite":
        return None
    name = url.database or ""
    if name in ("", ":memory:") or name.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return partial(_leafwalk.walk, name, log_id)


_COPY = (
    f"COPY (SELECT {', '.join(LEAF_KEYS)}, leaf_hash, pruned FROM journal_entries "  # noqa: S608
    "WHERE log_id = {} AND seq >= {} AND seq < {} ORDER BY seq) TO STDOUT (FORMAT BINARY)"
)
"""The select list ``_leafwalk.c`` parses: the leaf's keys in canonical order (``seq`` a real
column here), then ``leaf_hash`` and ``pruned``; log and bounds are literals (psycopg's)."""


def _copy_walk(engine: Engine, log_id: str, start: int, end: int, sizes: Sequence[int]) -> RawWalk:
    from psycopg import sql  # only on PostgreSQL

    assert _leafwalk is not None
    statement = sql.SQL(_COPY).format(sql.Literal(log_id), sql.Literal(start), sql.Literal(end))
    pooled = engine.raw_connection()
    try:
        with pooled.driver_connection.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[union-attr]
            data = b"".join(copy)
        pooled.rollback()
    finally:
        pooled.close()
    return _leafwalk.walk_copy(data, start, end, sizes)


def _split(blob: bytes) -> tuple[bytes, ...]:
    return tuple(blob[i : i + HASH] for i in range(0, len(blob), HASH))


def _walk(read: RangeReader, start: int, end: int, sizes: Sequence[int]) -> WalkedRange:
    inside = [s for s in sizes if start < s <= end]
    clean, entries, hashed, pruned_max, nodes, at = read(start, end, inside)
    nodes_at: dict[int, tuple[bytes, ...]] = {}
    offset = 0
    for size in inside if clean else ():
        width = (size - start).bit_count() * HASH
        nodes_at[size] = _split(at[offset : offset + width])
        offset += width
    return WalkedRange(
        start, end, clean, entries, hashed, pruned_max, _split(nodes) if clean else (), nodes_at
    )


def walk_ranges(read: RangeReader, end: int, sizes: Sequence[int]) -> Iterator[WalkedRange]:
    """Walk ``[0, end)`` in ranges of :data:`RANGE` with ``read``, yielded in order.

    ``sizes``: the sorted sizes whose roots the caller will check (checkpoints). The ranges
    run :data:`WORKERS` at a time (None: one per core); each reads over
    its own connection, which sees at least what the caller's transaction saw (entries below
    a signed size never change in a sound log).
    """
    bounds = [(a, min(a + RANGE, end)) for a in range(0, end, RANGE)]
    with ThreadPoolExecutor(max_workers=WORKERS or os.cpu_count() or 1) as pool:
        yield from pool.map(lambda b: _walk(read, b[0], b[1], sizes), bounds)
