"""Integration of pending entries into the Merkle trees, and checkpoint signing.

Entries are appended with no position (so writers never contend on a counter); the sequencer
assigns leaf indices in arrival order, computes leaf hashes, MACs and tree nodes, and signs a
checkpoint — in one transaction per log, under the log's row lock (PostgreSQL ``FOR UPDATE``;
SQLite's ``BEGIN IMMEDIATE`` serialises writers). Several server workers may run it at once.

The window between an entry's commit and its integration is the integration interval
(``journal.integrate_interval_seconds``, 1 s by default) plus the batch time; during it the
entry is durable but not yet covered by a signed checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, select, update

from hdsvault.db.engine import marker, read_connection
from hdsvault.db.schema import journal_checkpoints, journal_logs
from hdsvault.journal import checkpoint as ckpt
from hdsvault.journal.merkle import leaf_hash, root_at
from hdsvault.journal.signer import JournalSigner
from hdsvault.journal.store import LEAF_SELECT, leaf_bytes, time_text
from hdsvault.journal.tree import DbNodeStore

BATCH = 20_000


class InconsistentLog(Exception):
    """The stored tree no longer matches its last signed checkpoint: refuse to sign."""


@dataclass(frozen=True)
class Integration:
    log_id: str
    old_size: int
    new_size: int


def pending_logs(conn: Connection) -> list[str]:
    """Logs with pending entries, read from the partial pending index (size: what is pending).

    SQLite's planner would otherwise scan the covering (log_id, seq) index, i.e. every entry
    ever journaled, once a second; PostgreSQL picks the small partial index by itself.
    """
    hint = " INDEXED BY ix_journal_entries_pending" if conn.dialect.name == "sqlite" else ""
    rows = conn.exec_driver_sql(
        f"SELECT DISTINCT log_id FROM journal_entries{hint} WHERE seq IS NULL"  # noqa: S608
    )
    return [r[0] for r in rows]


def integrate_all(engine: Engine, signer: JournalSigner) -> list[Integration]:
    """Integrate every log that has pending entries; one transaction per log and batch."""
    with read_connection(engine) as conn:
        logs = pending_logs(conn)
    done = []
    for log_id in logs:
        while True:
            with engine.begin() as conn:
                result = integrate(conn, signer, log_id)
            if result.new_size > result.old_size:
                done.append(result)
            if result.new_size - result.old_size < BATCH:
                break
    return done


def _lock_log(conn: Connection, log_id: str) -> int:
    stmt = select(journal_logs.c.size).where(journal_logs.c.log_id == log_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    size = conn.execute(stmt).scalar_one_or_none()
    if size is None:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(
                pg_insert(journal_logs).values(log_id=log_id, size=0).on_conflict_do_nothing()
            )
            size = conn.execute(stmt).scalar_one()
        else:
            conn.execute(insert(journal_logs).values(log_id=log_id, size=0))
            size = 0
    return int(size)


def integrate(conn: Connection, signer: JournalSigner, log_id: str) -> Integration:
    """Sequence up to :data:`BATCH` pending entries of ``log_id`` and sign a checkpoint."""
    size = _lock_log(conn, log_id)
    m = marker(conn)
    rows = conn.exec_driver_sql(
        f"SELECT {LEAF_SELECT}, id FROM journal_entries "  # noqa: S608 (constants, markers)
        f"WHERE log_id = {m} AND seq IS NULL ORDER BY id LIMIT {BATCH}",
        (log_id,),
    ).all()
    if not rows:
        return Integration(log_id, size, size)
    nodes = DbNodeStore(conn, log_id)
    _check_last_checkpoint(conn, nodes, log_id, size)
    spell = time_text(conn)
    leaves = [leaf_hash(leaf_bytes(row, seq, spell)) for seq, row in enumerate(rows, start=size)]
    conn.exec_driver_sql(
        f"UPDATE journal_entries SET seq = {m}, leaf_hash = {m}, mac = {m} WHERE id = {m}",  # noqa: S608
        [
            (seq, h, signer.leaf_mac(log_id, seq, h), row[-1])
            for seq, (h, row) in enumerate(zip(leaves, rows, strict=True), start=size)
        ],
    )
    new_size = size + len(rows)
    nodes.put_leaves(size, leaves)
    nodes.add_interior_nodes(size, new_size)
    conn.execute(update(journal_logs).where(journal_logs.c.log_id == log_id).values(size=new_size))
    root = nodes.prefetched(lambda get: root_at(new_size, get))
    note = ckpt.sign(
        ckpt.Checkpoint(signer.origin(log_id), new_size, root), signer.key_name, signer.signing_key
    )
    conn.execute(
        insert(journal_checkpoints).values(
            log_id=log_id, size=new_size, root_hash=root, note=note, created_at=datetime.now(UTC)
        )
    )
    return Integration(log_id, size, new_size)


def _check_last_checkpoint(conn: Connection, nodes: DbNodeStore, log_id: str, size: int) -> None:
    """Never extend a tree that no longer matches what was last signed."""
    last = conn.execute(
        select(journal_checkpoints.c.size, journal_checkpoints.c.root_hash)
        .where(journal_checkpoints.c.log_id == log_id)
        .order_by(journal_checkpoints.c.size.desc())
        .limit(1)
    ).first()
    if last is None:
        if size != 0:
            raise InconsistentLog(f"log {log_id} has {size} leaves but no checkpoint")
        return
    if last.size != size:
        raise InconsistentLog(f"log {log_id}: size {size} but last checkpoint at {last.size}")
    try:
        current = nodes.prefetched(lambda get: root_at(size, get))
    except LookupError as exc:
        raise InconsistentLog(f"log {log_id}: tree nodes missing ({exc})") from None
    if current != bytes(last.root_hash):
        raise InconsistentLog(
            f"log {log_id}: tree at size {size} differs from its signed checkpoint"
        )
