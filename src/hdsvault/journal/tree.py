"""The Merkle tree of one log, kept in the database.

Level 0 (leaf hashes) lives in ``journal_entries.leaf_hash``; every complete interior node
(level >= 1) in ``journal_nodes``. Proofs then need O(log n) point lookups, whatever the size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, insert, select

from hdsvault.db.schema import journal_entries, journal_nodes
from hdsvault.journal.merkle import NodeGetter

T = TypeVar("T")
_PLACEHOLDER = bytes(32)


class DbNodeStore:
    """:class:`hdsvault.journal.merkle.NodeStore` over the journal tables of one log."""

    def __init__(self, conn: Connection, log_id: str) -> None:
        self._conn = conn
        self._log_id = log_id
        self._cache: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes:
        key = (level, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if level == 0:
            stmt = select(journal_entries.c.leaf_hash).where(
                journal_entries.c.log_id == self._log_id, journal_entries.c.seq == index
            )
        else:
            stmt = select(journal_nodes.c.hash).where(
                journal_nodes.c.log_id == self._log_id,
                journal_nodes.c.level == level,
                journal_nodes.c.idx == index,
            )
        value = self._conn.execute(stmt).scalar_one_or_none()
        if value is None:
            raise LookupError(f"log {self._log_id}: no node at level {level}, index {index}")
        self._cache[key] = bytes(value)
        return self._cache[key]

    def prefetched(self, compute: Callable[[NodeGetter], T]) -> T:
        """Run ``compute(get_node)`` after fetching every node it needs in a few queries.

        The proof and root algorithms choose which nodes to read from the sizes alone, never
        from hash values, so a dry run with placeholder hashes lists the nodes; one query per
        tree level then loads them, instead of one round trip per node.
        """
        wanted: set[tuple[int, int]] = set()

        def record(level: int, index: int) -> bytes:
            wanted.add((level, index))
            return _PLACEHOLDER

        compute(record)
        missing = wanted - self._cache.keys()
        leaves = [i for level, i in missing if level == 0]
        inner = [(level, i) for level, i in missing if level > 0]
        if leaves:
            for seq, h in self._conn.execute(
                select(journal_entries.c.seq, journal_entries.c.leaf_hash).where(
                    journal_entries.c.log_id == self._log_id, journal_entries.c.seq.in_(leaves)
                )
            ):
                if h is not None:
                    self._cache[(0, seq)] = bytes(h)
        if inner:
            by_level: dict[int, list[int]] = {}
            for level, i in inner:
                by_level.setdefault(level, []).append(i)
            # One indexed lookup per level: ORs and row-value IN lists defeat SQLite's planner.
            for level, idxs in by_level.items():
                for i, h in self._conn.execute(
                    select(journal_nodes.c.idx, journal_nodes.c.hash).where(
                        journal_nodes.c.log_id == self._log_id,
                        journal_nodes.c.level == level,
                        journal_nodes.c.idx.in_(idxs),
                    )
                ):
                    self._cache[(level, i)] = bytes(h)
        return compute(self.get)

    def put_leaves(self, start: int, leaf_hashes: list[bytes]) -> None:
        """Make new leaves visible to :meth:`get` before they are written (same transaction)."""
        for offset, h in enumerate(leaf_hashes):
            self._cache[(0, start + offset)] = h

    def add_interior_nodes(self, old_size: int, new_size: int) -> None:
        """Compute and insert every interior node completed by leaves ``[old_size, new_size)``."""
        rows = []
        level = 1
        while (1 << level) <= new_size:
            width = 1 << level
            first = old_size // width  # nodes with (i + 1) * width in (old_size, new_size]
            last = new_size // width
            for i in range(first, last):
                if (i + 1) * width <= old_size:
                    continue
                h = hashlib.sha256(
                    b"\x01" + self.get(level - 1, 2 * i) + self.get(level - 1, 2 * i + 1)
                ).digest()
                self._cache[(level, i)] = h
                rows.append({"log_id": self._log_id, "level": level, "idx": i, "hash": h})
            level += 1
        if rows:
            self._conn.execute(insert(journal_nodes), rows)
