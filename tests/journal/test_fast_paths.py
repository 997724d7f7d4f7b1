"""The fast paths keep every guarantee: leaf bytes, column edits, lazy MACs, one-query proofs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, select, update

from hdsvault.db.engine import read_connection
from hdsvault.db.schema import journal_checkpoints, journal_entries, journal_nodes
from hdsvault.journal import service
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome, safe_text
from hdsvault.journal.merkle import MerkleTree, consistency_proof, inclusion_proof, leaf_hash
from hdsvault.journal.store import LEAF_SELECT, leaf_bytes, row_to_entry, time_text
from hdsvault.journal.tree import DbNodeStore
from hdsvault.platform import Platform

from .test_journal_store import entry, fill, verify


def odd_entries() -> list[JournalEntry]:
    """Entries whose canonical bytes exercise every conversion leaf_bytes makes."""
    base = JournalEntry(
        log_id="t",
        time=datetime(2026, 11, 29, 7, 31, 15, 0, tzinfo=UTC),
        event_type="fhir.read",
        category=Category.ACCESS,
        action=Action.READ,
        outcome=Outcome.SUCCESS,
        actor="token:a",
    )
    paris = timezone(timedelta(hours=1))
    return [
        base,
        base.__class__(**{**_fields(base), "time": datetime(2026, 1, 2, 3, 4, 5, 6)}),  # naive
        base.__class__(**{**_fields(base), "time": datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=paris)}),
        base.__class__(
            **{
                **_fields(base),
                "actor": 'oidc:https://idp.example|Zoë "the" \\ tab\tnl\n\x01\x7f\u2028',
                "objects": ("Patient/é", "Observation/\x1f"),
                "patient": "Patient/\ud800",  # a lone surrogate: stored replaced
                "detail_sealed": b"\x00\xff" * 40,
            }
        ),
        base.__class__(**{**_fields(base), "detail_sealed": b""}),  # empty: null, like None
    ]


def _fields(e: JournalEntry) -> dict[str, object]:
    return {f: getattr(e, f) for f in e.__dataclass_fields__}


def test_leaf_bytes_from_columns_equal_the_entry_canonical_bytes(platform: Platform) -> None:
    entries = odd_entries()
    with platform.engine.begin() as conn:
        for e in entries:
            service.record(conn, e)
    service.integrate(platform)
    with read_connection(platform.engine) as conn:
        spell = time_text(conn)
        rows = conn.exec_driver_sql(
            f"SELECT {LEAF_SELECT}, seq, leaf_hash FROM journal_entries "
            "WHERE log_id = 't' ORDER BY seq"
        ).all()
        stored = [
            row_to_entry(r)
            for r in conn.execute(
                select(journal_entries)
                .where(journal_entries.c.log_id == "t")
                .order_by(journal_entries.c.seq)
            )
        ]
    assert len(rows) == len(entries)
    for row, e, back in zip(rows, entries, stored, strict=True):
        seq = row[-2]
        data = leaf_bytes(row, seq, spell)
        recorded = e.__class__(**{**_fields(e), "patient": safe_text(e.patient or "") or None})
        assert data == recorded.canonical_bytes(seq) == back.canonical_bytes(seq)
        assert leaf_hash(data) == bytes(row[-1])
    assert service.verify(platform).ok


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("patient", "Patient/someone-else"),
        ("objects", '["Patient/p8"]'),
        ("objects", "not JSON"),  # named, not a crash
        ("detail_sealed", b"\x01sealed\x08"),
        ("time", None),  # filled in below
        ("severity", "alert"),
        ("pruned", True),  # emptied without a journaled prune
    ],
)
def test_every_column_edit_is_named(platform: Platform, column: str, value: object) -> None:
    fill(platform, "t", 12, batches=2)
    with platform.engine.begin() as conn:
        if column == "time":
            stored = conn.exec_driver_sql(
                "SELECT time FROM journal_entries WHERE log_id = 't' AND seq = 7"
            ).scalar_one()
            if isinstance(stored, str):  # SQLite text: the same instant spelt with a 'T'
                conn.exec_driver_sql(
                    "UPDATE journal_entries SET time = ? WHERE log_id = 't' AND seq = 7",
                    (stored.replace(" ", "T"),),
                )
                column, value = "severity", "info"  # unchanged: only the time differs
            else:
                value = stored + timedelta(microseconds=1)
        conn.execute(
            update(journal_entries)
            .where(journal_entries.c.log_id == "t", journal_entries.c.seq == 7)
            .values({column: value})
        )
    report, problems = verify(platform)
    assert not report.ok
    assert problems[0].index == 7, problems
    assert problems[0].kind == ("pruned-unrecorded" if column == "pruned" else "altered")


def test_forged_entry_in_an_early_checkpoint_is_named_by_the_second_mac_pass(
    platform: Platform,
) -> None:
    """The forged leaf is under a checkpoint: its root no longer matches, the MACs say where."""
    fill(platform, "t", 30, batches=3)  # checkpoints at 10, 20, 30
    _forge(platform, 4)
    _, problems = verify(platform)
    assert problems[0].index == 4 and problems[0].kind == "forged", problems
    assert {p.kind for p in problems} >= {"forged", "root-mismatch"}


def test_forged_tail_without_checkpoints_is_named_by_the_inline_macs(platform: Platform) -> None:
    """Delete every checkpoint too: no root vouches for anything, every MAC is checked."""
    fill(platform, "t", 30, batches=3)
    _forge(platform, 17)
    with platform.engine.begin() as conn:
        conn.execute(delete(journal_checkpoints).where(journal_checkpoints.c.log_id == "t"))
    _, problems = verify(platform)
    assert [(p.index, p.kind) for p in problems] == [(17, "forged")]


def _forge(platform: Platform, seq: int) -> None:
    """Rewrite entry ``seq`` and its leaf hash consistently, and drop the stored tree."""
    with platform.engine.begin() as conn:
        row = conn.execute(
            select(journal_entries).where(
                journal_entries.c.log_id == "t", journal_entries.c.seq == seq
            )
        ).one()
        forged = JournalEntry.from_fields(
            {**row_to_entry(row).public_fields(), "actor": "token:innocent"}
        )
        conn.execute(
            update(journal_entries)
            .where(journal_entries.c.id == row.id)
            .values(actor="token:innocent", leaf_hash=leaf_hash(forged.canonical_bytes(seq)))
        )
        conn.execute(delete(journal_nodes).where(journal_nodes.c.log_id == "t"))


def test_database_proofs_equal_the_in_memory_tree(platform: Platform) -> None:
    """Proofs read with one statement equal the reference tree's, at every index and size."""
    n = 37
    with platform.engine.begin() as conn:
        for i in range(n):
            service.record(conn, entry("t", i))
    service.integrate(platform)
    with read_connection(platform.engine) as conn:
        leaves = [
            bytes(h)
            for h in conn.execute(
                select(journal_entries.c.leaf_hash)
                .where(journal_entries.c.log_id == "t")
                .order_by(journal_entries.c.seq)
            ).scalars()
        ]
        tree = MerkleTree(leaves)
        for size in (1, 2, 5, 16, 17, 36, 37):
            for i in range(size):
                nodes = DbNodeStore(conn, "t")
                got = nodes.prefetched(lambda get: inclusion_proof(i, size, get))  # noqa: B023
                assert got == tree.inclusion_proof(i, size)
            for m in range(size + 1):
                nodes = DbNodeStore(conn, "t")
                got = nodes.prefetched(lambda get: consistency_proof(m, size, get))  # noqa: B023
                assert got == tree.consistency_proof(m, size)


def test_a_pruned_entry_keeps_verifying_through_its_stored_leaf_hash(platform: Platform) -> None:
    fill(platform, "t", 10, batches=1)
    with platform.engine.begin() as conn:
        conn.execute(
            update(journal_entries)
            .where(journal_entries.c.log_id == "t", journal_entries.c.seq == 3)
            .values(pruned=True, actor="", objects="[]", patient=None, detail_sealed=None)
        )
    _, problems = verify(platform)
    # No journaled prune covers it: named, and nothing else is wrong.
    assert [(p.index, p.kind) for p in problems] == [(3, "pruned-unrecorded")]
