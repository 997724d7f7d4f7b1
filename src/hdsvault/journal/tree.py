"""The Merkle tree of one log, kept in the database.

Level 0 (leaf hashes) lives in ``journal_entries.leaf_hash``; every complete interior node
(level >= 1) in ``journal_nodes``. Proofs then need O(log n) point lookups, whatever the size,
and :meth:`DbNodeStore.prefetched` makes them all in one statement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, select

from hdsvault.db.engine import marker
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
        """Run ``compute(get_node)`` after fetching every node it needs in one statement.

        The proof and root algorithms choose which nodes to read from the sizes alone, never
        from hash values, so a dry run with placeholder hashes lists the nodes; one statement
        then loads them all (a proof at a million entries needs about forty), instead of one
        round trip per node or per level: round trips, not lookups, are what proofs cost.
        """
        wanted: set[tuple[int, int]] = set()

        def record(level: int, index: int) -> bytes:
            wanted.add((level, index))
            return _PLACEHOLDER

        compute(record)
        missing = sorted(wanted - self._cache.keys())
        if missing:
            sql, params = self._lookup_sql(missing)
            for level, i, h in self._conn.exec_driver_sql(sql, params):
                if h is not None:
                    self._cache[(level, i)] = bytes(h)
        return compute(self.get)

    def _lookup_sql(self, nodes: list[tuple[int, int]]) -> tuple[str, tuple[Any, ...]]:
        """One statement reading ``nodes``: a UNION ALL of indexed point lookups.

        Each branch is a primary-key (or ``(log_id, seq)``) lookup; row-value IN lists and
        ORs would be simpler SQL but make SQLite scan instead of seek.
        """
        m = marker(self._conn)
        leaves = [i for level, i in nodes if level == 0]
        branches: list[str] = []
        params: list[Any] = []
        if leaves:
            branches.append(
                f"SELECT 0, seq, leaf_hash FROM journal_entries "  # noqa: S608 (markers only)
                f"WHERE log_id = {m} AND seq IN ({', '.join([m] * len(leaves))})"
            )
            params += [self._log_id, *leaves]
        for level, i in nodes:
            if level > 0:
                branches.append(
                    f"SELECT level, idx, hash FROM journal_nodes "  # noqa: S608 (markers only)
                    f"WHERE log_id = {m} AND level = {m} AND idx = {m}"
                )
                params += [self._log_id, level, i]
        return " UNION ALL ".join(branches), tuple(params)

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
                rows.append((self._log_id, level, i, h))
            level += 1
        if rows:
            m = marker(self._conn)
            columns = "journal_nodes (log_id, level, idx, hash)"
            sql = f"INSERT INTO {columns} VALUES ({m}, {m}, {m}, {m})"  # noqa: S608 (constants)
            self._conn.exec_driver_sql(sql, rows)
