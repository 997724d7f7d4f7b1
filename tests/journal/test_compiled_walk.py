"""The compiled walk (``_leafwalk``) confirms exactly what the Python walk would, nothing more.

It reproduces every leaf byte for byte (odd values included), folds ranges into the same
roots, and any tampering it meets sends the range back to the Python walk, which names the
problem exactly as before. Ranges are shrunk to 8 entries here so that a few dozen entries
cross several of them (boundaries, checkpoints inside and at the end of ranges).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, text

from hdsvault.db.schema import journal_entries
from hdsvault.journal import leafwalk, service
from hdsvault.journal.merkle import CompactRange, leaf_hash
from hdsvault.journal.sequencer import integrate
from hdsvault.platform import Platform

from .test_fast_paths import _forge as forge
from .test_fast_paths import odd_entries
from .test_journal_store import _set, entry, fill, verify
from support.components import require_component

pytestmark = pytest.mark.usefixtures("small_ranges")


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leafwalk, "RANGE", 8)


@pytest.fixture
def compiled(platform: Platform) -> Platform:
    """The platform, once the compiled walk is known to be built."""
    if not leafwalk.available():
        require_component("_leafwalk", "not built: run scripts/build-native.sh (make setup)")
    return platform


def log_report(platform: Platform, log_id: str = "t"):  # type: ignore[no-untyped-def]
    report, problems = verify(platform)
    return next(r for r in report.logs if r.log_id == log_id), problems


def python_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leafwalk, "reader", lambda conn, log_id: None)


def test_the_compiled_walk_is_built_in_ci() -> None:
    if not leafwalk.available():
        require_component("_leafwalk", "not built: run scripts/build-native.sh (make setup)")


def test_a_clean_log_is_confirmed_by_the_compiled_walk(compiled: Platform) -> None:
    fill(compiled, "t", 45, batches=4)  # checkpoints at 12, 24, 36, 45: inside and across ranges
    log, problems = log_report(compiled)
    assert problems == []
    assert (log.entries, log.compiled_entries) == (45, 45)


def test_python_walk_alone_gives_the_same_report(
    compiled: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(compiled, "t", 45, batches=4)
    log, _ = log_report(compiled)
    python_only(monkeypatch)
    alone, _ = log_report(compiled)
    assert alone.compiled_entries == 0
    assert (alone.entries, alone.bytes_hashed) == (log.entries, log.bytes_hashed)


def test_odd_values_are_rebuilt_byte_for_byte(compiled: Platform) -> None:
    """Escapes, controls, non-ASCII, lone surrogates, naive and far times, empty blobs."""
    rng = random.Random(7)
    # PostgreSQL's text cannot hold NUL (the insert itself is refused): SQLite gets it too.
    first = 0 if compiled.engine.dialect.name == "sqlite" else 1
    alphabet = [chr(c) for c in range(first, 0x80)] + ["é", "€", "😀", "\u2028", "\ufeff"]
    entries = odd_entries()
    for i in range(40):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        entries.append(
            replace(
                entries[0],
                actor=text or "x",
                actor_role=text or None,
                objects=(text, f"Patient/{i}"),
                request_id=text[:60] or None,
                detail_sealed=rng.randbytes(rng.randrange(0, 5)),
            )
        )
    with compiled.engine.begin() as conn:
        for e in entries:
            service.record(conn, e)
    service.integrate(compiled)
    log, problems = log_report(compiled)
    assert problems == []
    assert log.compiled_entries == len(entries)


def _set_raw(platform: Platform, at: int, column: str, value: object) -> None:
    """Bypass SQLAlchemy's column types (SQLite stores what it is given)."""
    with platform.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE journal_entries SET {column} = :v WHERE log_id = 't' AND seq = :at"),
            {"v": value, "at": at},
        )


def _swap(platform: Platform) -> None:
    _set(platform, 5, seq=-1)
    _set(platform, 21, seq=5)
    _set(platform, -1, seq=21)


def _delete(platform: Platform, lo: int, hi: int) -> None:
    with platform.engine.begin() as conn:
        conn.execute(
            delete(journal_entries).where(
                journal_entries.c.log_id == "t",
                journal_entries.c.seq >= lo,
                journal_entries.c.seq < hi,
            )
        )


TAMPERINGS = {
    "edit": (lambda p: _set(p, 19, actor="token:someone-else"), [(19, "altered")]),
    "edit at a range start": (lambda p: _set(p, 24, patient="Patient/x"), [(24, "altered")]),
    "time moved by 1 us": (
        lambda p: _set(p, 3, time=datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC)),
        [(3, "altered")],
    ),
    "time reshaped": (lambda p: _set_raw(p, 30, "time", "2026-11-29T07:31:15"), [(30, "altered")]),
    "delete one": (lambda p: _delete(p, 16, 17), [(16, "missing")]),
    "delete a whole range": (lambda p: _delete(p, 8, 16), [(8, "missing")]),
    "truncate": (lambda p: _delete(p, 37, 45), [(37, "truncated")]),
    "swap across ranges": (_swap, [(5, "altered"), (11, "root-mismatch"), (21, "altered")]),
}


@pytest.mark.parametrize("name", TAMPERINGS)
def test_tampering_is_named_as_the_python_walk_names_it(
    compiled: Platform, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    tamper, expected = TAMPERINGS[name]
    fill(compiled, "t", 45, batches=4)
    tamper(compiled)
    log, problems = log_report(compiled)
    assert [(p.index, p.kind) for p in problems][: len(expected)] == expected, problems
    assert 0 < log.compiled_entries < 45  # clean ranges confirmed, the tampered one redone
    python_only(monkeypatch)
    _, alone = log_report(compiled)
    assert alone == problems


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL's types refuse it
def test_a_blob_in_a_text_column_is_left_to_the_python_walk(
    compiled: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite stores any type anywhere: the compiled walk must not read b"0" as the text "0"."""
    fill(compiled, "t", 45, batches=4)
    _set_raw(compiled, 3, "outcome", b"0")
    log, problems = log_report(compiled)
    assert (problems[0].index, problems[0].kind) == (3, "altered")
    assert log.compiled_entries == 45 - 8
    python_only(monkeypatch)
    assert log_report(compiled)[1] == problems


def test_forged_range_with_rebuilt_leaf_hashes_fails_its_root_and_macs(compiled: Platform) -> None:
    """Entries and leaf hashes rewritten consistently: the compiled walk finds the range clean,
    so the roots it folds are what must catch it (and the MACs name the entry)."""
    fill(compiled, "t", 45, batches=4)
    forge(compiled, 20)
    log, problems = log_report(compiled)
    assert log.compiled_entries == 45  # every leaf matched its (forged) stored hash
    assert (problems[0].index, problems[0].kind) == (20, "forged")
    assert any(p.kind == "root-mismatch" and p.index == 23 for p in problems)


def test_an_equivalent_but_respelled_column_is_left_to_the_python_walk(compiled: Platform) -> None:
    """`objects` rewritten with spaces means the same list: Python accepts it, the compiled
    walk (which copies the stored text) does not confirm it and hands the range over."""
    fill(compiled, "t", 45, batches=4)
    _set(compiled, 10, objects='[ "Patient/p10" ]')
    log, problems = log_report(compiled)
    assert problems == []
    assert log.compiled_entries == 45 - 8


def test_the_unsigned_tail_is_walked_in_python(compiled: Platform) -> None:
    """Past the largest signed size every leaf's MAC is checked, one by one."""
    fill(compiled, "t", 20, batches=1)
    with compiled.engine.begin() as conn:
        for i in range(20, 30):
            service.record(conn, entry("t", i))
    with compiled.engine.begin() as conn:  # sequenced, but no checkpoint covers them yet
        integrate(conn, compiled.journal_signer(), "t")
    log, problems = log_report(compiled)
    assert problems == []
    assert log.entries == 30


@pytest.mark.parametrize(("start", "width"), [(0, 1), (0, 5), (8, 8), (16, 3), (64, 37)])
def test_extend_range_equals_appending_the_leaves(start: int, width: int) -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(start + width)]
    whole = CompactRange()
    whole.extend(leaves)
    part = CompactRange()
    part.extend(leaves[start:][:width])  # the range alone, as the compiled walk folds it
    built = CompactRange()
    built.extend(leaves[:start])
    built.extend_range(part.nodes, width)
    assert (built.size, built.root()) == (whole.size, whole.root())


def test_a_misaligned_subtree_is_refused() -> None:
    tree = CompactRange()
    tree.extend([leaf_hash(b"a")] * 3)
    with pytest.raises(ValueError, match="cannot start"):
        tree.append_subtree(leaf_hash(b"b"), 1)


def test_the_walk_checks_its_arguments(compiled: Platform, tmp_path: Path) -> None:
    from hdsvault.journal import _leafwalk

    db = str(tmp_path / "none.db")
    with pytest.raises(ValueError, match="power of two"):
        _leafwalk.walk(db, "t", 3, 7, [])
    with pytest.raises(ValueError, match="increasing"):
        _leafwalk.walk(db, "t", 0, 8, [4, 4])
    with pytest.raises(OSError, match="SQLite error"):
        _leafwalk.walk(db, "t", 0, 8, [])
    with pytest.raises(OSError, match="not a binary COPY"):
        _leafwalk.walk_copy(b"garbage", 0, 8, [])
    with pytest.raises(OSError, match="truncated"):  # a header extension past the end
        _leafwalk.walk_copy(b"PGCOPY\n\xff\r\n\x00" + bytes(4) + b"\xff" * 4, 0, 8, [])
    with pytest.raises(OSError, match="truncated"):
        _leafwalk.walk_copy(b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\x00\x15\x00", 0, 8, [])


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_mangled_copy_data_is_never_confirmed(compiled: Platform) -> None:
    """Garbage from the wire (a cut, a flipped byte anywhere) makes the walk stop or refuse;
    it never crashes and never confirms what it did not rebuild."""
    from psycopg import sql

    from hdsvault.journal import _leafwalk

    fill(compiled, "t", 8, batches=1)
    statement = sql.SQL(leafwalk._COPY).format(sql.Literal("t"), sql.Literal(0), sql.Literal(8))
    pooled = compiled.engine.raw_connection()
    try:
        with pooled.driver_connection.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[union-attr]
            data = b"".join(copy)
    finally:
        pooled.close()
    assert _leafwalk.walk_copy(data, 0, 8, [])[:2] == (True, 8)
    rng = random.Random(3)
    mangled = [data[:cut] for cut in range(0, len(data), 7)]
    for _ in range(300):
        at = rng.randrange(19, len(data))
        mangled.append(data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :])
    for bad in mangled:
        try:
            clean, _, _, pruned_max, _, _ = _leafwalk.walk_copy(bad, 0, 8, [])
        except OSError:
            continue
        assert not clean or pruned_max >= 0  # a flipped "pruned" flag: Python checks it
