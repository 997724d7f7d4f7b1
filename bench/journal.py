"""Journal benchmark: durable appends/s, verify speed vs raw SHA-256, proofs at 1M entries.

Run: ``uv run python bench/journal.py [--entries N]`` (default 1,000,000 for the proof part).
Everything runs on the embedded default (SQLite WAL, flushed before each commit returns) in a
temp directory.

Peers, in the same run:
- appends: one entry per transaction (what a request does), a group commit of 100 entries per
  transaction, and 4 threads appending concurrently (each its own transaction);
- verify: MB/s of canonical journal bytes vs ``hashlib.sha256`` over the same bytes, one call
  per entry (the raw-hash limit of a per-entry verifier), for the compiled walk on every core
  and on one, and for the Python walk alone (PostgreSQL's path); then the Python walk's
  stages timed alone on the same entries, and the limit of a Python verifier that finds every
  leaf's bytes stored (fetch, hash, compare, tree: nothing else);
- proofs: DB-backed inclusion and consistency proof generation, p50/p99 at N entries.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection

sys.path.insert(0, str(Path(__file__).parent))
from _table import print_table

from hdsvault.config import load_settings
from hdsvault.db.engine import marker, read_connection
from hdsvault.journal import leafwalk, service
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome
from hdsvault.journal.merkle import CompactRange, consistency_proof, inclusion_proof
from hdsvault.journal.signer import JournalSigner
from hdsvault.journal.store import LEAF_SELECT, append_many, leaf_bytes, time_text
from hdsvault.journal.tree import DbNodeStore
from hdsvault.journal.verify import verify_log
from hdsvault.platform import Platform, init_platform

LOG = "750712184"


def entry(i: int) -> JournalEntry:
    return JournalEntry(
        log_id=LOG,
        time=datetime.now(UTC),
        event_type="fhir.read",
        category=Category.ACCESS,
        action=Action.READ,
        outcome=Outcome.SUCCESS,
        actor=f"token:{i % 1000:024d}",
        actor_role="clinician",
        objects=(f"Observation/{i:032x}",),
        patient=f"Patient/{i % 5000:032x}",
        source_address="127.0.0.1",
        request_id=f"{i:032x}",
        detail_sealed=bytes(60),
    )


def leaf_data(conn: Connection) -> list[bytes]:
    """Every leaf's bytes, rebuilt from the columns as verify does (no hashing)."""
    spell = time_text(conn)
    m = marker(conn)
    rows = conn.exec_driver_sql(
        f"SELECT {LEAF_SELECT}, seq FROM journal_entries WHERE log_id = {m} ORDER BY seq",
        (LOG,),
    )
    return [leaf_bytes(r, r[-1], spell) for r in rows]


def verify_stages(conn: Connection, data: list[bytes], work: Path) -> list[list[object]]:
    """Where a verifier's time goes, stage by stage on the same entries, and the limit of a
    verifier written in Python: one that finds each leaf's bytes stored in one column (no
    rebuilding from columns) and only fetches, hashes, compares and builds the tree."""
    spell = time_text(conn)
    sql = f"SELECT {LEAF_SELECT}, seq FROM journal_entries WHERE log_id = ? AND seq >= ? "
    sql += "AND seq < ? ORDER BY seq"
    fetch = rebuild = 0.0
    for lo in range(0, len(data), 20_000):  # in batches, as verify reads
        t = time.perf_counter()
        rows = conn.exec_driver_sql(sql, (LOG, lo, lo + 20_000)).all()
        fetch += time.perf_counter() - t
        t = time.perf_counter()
        for r in rows:
            leaf_bytes(r, r[-1], spell)
        rebuild += time.perf_counter() - t
    t = time.perf_counter()
    hashes = [hashlib.sha256(b"\x00" + d).digest() for d in data]
    hashing = time.perf_counter() - t
    t = time.perf_counter()
    CompactRange().extend(hashes)
    tree = time.perf_counter() - t

    db = sqlite3.connect(work / "stored-leaves.db")
    db.execute("CREATE TABLE leaves (seq INTEGER PRIMARY KEY, leaf BLOB, leaf_hash BLOB)")
    db.executemany(
        "INSERT INTO leaves VALUES (?, ?, ?)", zip(range(len(data)), data, hashes, strict=True)
    )
    db.commit()
    t = time.perf_counter()
    ideal = CompactRange()
    for lo in range(0, len(data), 20_000):
        batch = db.execute(
            "SELECT leaf, leaf_hash FROM leaves WHERE seq >= ? AND seq < ? ORDER BY seq",
            (lo, lo + 20_000),
        ).fetchall()
        got = [hashlib.sha256(b"\x00" + leaf).digest() for leaf, _ in batch]
        assert got == [h for _, h in batch]
        ideal.extend(got)
    limit = time.perf_counter() - t
    db.close()
    return [
        ["  fetch the entries' columns into Python", fetch],
        ["  rebuild canonical leaf bytes from the columns", rebuild],
        ["  SHA-256 of every leaf", hashing],
        ["  Merkle tree over the leaf hashes", tree],
        ["Python limit: leaf bytes stored, fetch + hash + compare + tree", limit],
    ]


def timed_verify(
    platform: Platform, signer: JournalSigner, *, workers: int | None, compiled: bool
) -> float:
    """Seconds of one ``verify_log`` of the bench's log, with the walk chosen."""
    saved = leafwalk.WORKERS, leafwalk.reader
    leafwalk.WORKERS = workers
    if not compiled:
        leafwalk.reader = lambda conn, log_id: None  # type: ignore[assignment]
    try:
        with read_connection(platform.engine) as conn:
            t = time.perf_counter()
            report = verify_log(conn, signer, LOG)
            seconds = time.perf_counter() - t
    finally:
        leafwalk.WORKERS, leafwalk.reader = saved
    assert not report.problems, report.problems[:3]
    assert report.compiled_entries == (report.entries if compiled else 0), "walk not used"
    return seconds


def print_verify(platform: Platform, backend: str, work: Path | None) -> None:
    """The verify table: compiled walk on every core and on one, Python walk, raw SHA-256
    (and, with ``work``, the Python walk's stages and the stored-leaf limit)."""
    signer = platform.journal_signer()
    walks = {}
    for name, workers, compiled in (
        (f"hdsvault journal verify (compiled walk, {os.cpu_count()} threads)", None, True),
        ("  the same on one thread", 1, True),
        ("  Python walk alone", None, False),
    ):
        walks[name] = timed_verify(platform, signer, workers=workers, compiled=compiled)
    with read_connection(platform.engine) as conn:
        data = leaf_data(conn)
    raw = []
    for _ in range(3):  # the reference at its best of three: the ratio errs against us
        t = time.perf_counter()
        for d in data:
            hashlib.sha256(b"\x00" + d).digest()
        raw.append(time.perf_counter() - t)
    raw_s = min(raw)
    mb = sum(map(len, data)) / 1e6
    stages: list[list[object]] = []
    if work is not None:
        with read_connection(platform.engine) as conn:
            stages = verify_stages(conn, data, work)
    print_table(
        f"Verify on {backend}, {len(data):,} entries (rebuild every leaf from its columns, "
        "hash it, check roots and unvouched MACs)",
        ["what", "MB", "seconds", "MB/s", "ratio vs raw SHA-256"],
        [
            *([what, mb, sec, mb / sec, raw_s / sec] for what, sec in walks.items()),
            ["raw SHA-256, one call per entry (best of 3)", mb, raw_s, mb / raw_s, 1.0],
            *([what, mb, sec, mb / sec, raw_s / sec] for what, sec in stages),
        ],
        caption="target: verify >= 0.5x raw SHA-256"
        + ("; last rows: the Python walk's stages" if stages else ""),
    )


def bench_postgresql(entries: int) -> None:
    """Verify on a throwaway PostgreSQL cluster (durable, as in production)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from support.pgcluster import PostgresCluster, missing_requirements

    problem = missing_requirements()
    if problem:
        print(f"PostgreSQL verify skipped: {problem}")
        return
    with (
        PostgresCluster(durable=True, name="bench-journal") as cluster,
        tempfile.TemporaryDirectory() as tmp,
    ):
        url = cluster.create_database("bench")
        settings = load_settings(data_dir=Path(tmp) / "var", database={"url": url})
        init_platform(settings)
        platform = Platform.open(settings)
        try:
            for i in range(0, entries, 5000):
                with platform.engine.begin() as conn:
                    append_many(conn, (entry(k) for k in range(i, min(entries, i + 5000))))
            service.integrate(platform)
            print_verify(platform, "PostgreSQL", None)
        finally:
            platform.close()


def bench_appends(platform: Platform, seconds: float) -> list[list[object]]:
    rows: list[list[object]] = []

    def single(stop: float, counter: list[int]) -> None:
        while time.perf_counter() < stop:
            with platform.engine.begin() as conn:
                service.record(conn, entry(counter[0]))
            counter[0] += 1

    c = [0]
    t = time.perf_counter()
    single(t + seconds, c)
    rows.append(["1 entry / transaction", c[0] / (time.perf_counter() - t)])

    for batch in (100, 1000):  # a busy server's group commit; a batch importer
        n = 0
        t = time.perf_counter()
        while time.perf_counter() < t + seconds:
            with platform.engine.begin() as conn:
                n += append_many(conn, (entry(i) for i in range(n, n + batch)))
        rows.append([f"group commit, {batch:,} / transaction", n / (time.perf_counter() - t)])

    counters = [[0] for _ in range(4)]
    t = time.perf_counter()
    threads = [threading.Thread(target=single, args=(t + seconds, k)) for k in counters]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rows.append(
        [
            "4 threads, 1 entry / transaction",
            sum(k[0] for k in counters) / (time.perf_counter() - t),
        ]
    )

    writer = platform.durable_journal()
    for threads_n in (16, 64):
        done = [0] * threads_n

        def reader(slot: int, stop: float) -> None:
            i = 0
            while time.perf_counter() < stop:
                writer.record(entry(slot * 10_000_000 + i))
                i += 1
            done[slot] = i

        t = time.perf_counter()
        pool = [threading.Thread(target=reader, args=(k, t + seconds)) for k in range(threads_n)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        rows.append(
            [f"group commit, {threads_n} concurrent readers", sum(done) / (time.perf_counter() - t)]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument(
        "--pg-entries", type=int, default=200_000, help="entries of the PostgreSQL verify (0: none)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp) / "var")
        init_platform(settings)
        platform = Platform.open(settings)
        rows = bench_appends(platform, args.seconds)
        print_table(
            "Durable journal appends (SQLite WAL, flushed at each commit)",
            ["mode", "appends/s"],
            rows,
            caption="target >= 20,000/s",
        )

        # Fill up to N entries with group commits, then sequence (timed).
        with read_connection(platform.engine) as conn:
            have = conn.exec_driver_sql("SELECT count(*) FROM journal_entries").scalar_one()
        t = time.perf_counter()
        i = have
        while i < args.entries:
            with platform.engine.begin() as conn:
                i += append_many(conn, (entry(k) for k in range(i, min(args.entries, i + 5000))))
        fill = time.perf_counter() - t
        t = time.perf_counter()
        service.integrate(platform)
        sequencing = time.perf_counter() - t
        print_table(
            "Filling and sequencing",
            ["step", "entries", "seconds", "entries/s"],
            [
                [
                    "append (group commits of 5,000)",
                    args.entries - have,
                    fill,
                    (args.entries - have) / fill,
                ],
                [
                    "sequence: leaf hashes, MACs, nodes, checkpoints",
                    args.entries,
                    sequencing,
                    args.entries / sequencing,
                ],
            ],
        )

        print_verify(platform, "SQLite", Path(tmp))

        with read_connection(platform.engine) as conn:
            size = args.entries
            import random

            rnd = random.Random(7)
            inc, con = [], []
            for _ in range(200):
                nodes = DbNodeStore(conn, LOG)  # fresh: no cache between proofs
                idx = rnd.randrange(size)
                t = time.perf_counter()
                nodes.prefetched(lambda get: inclusion_proof(idx, size, get))
                inc.append((time.perf_counter() - t) * 1000)
                nodes = DbNodeStore(conn, LOG)
                m = rnd.randrange(1, size)
                t = time.perf_counter()
                nodes.prefetched(lambda get: consistency_proof(m, size, get))
                con.append((time.perf_counter() - t) * 1000)

        def p(values: list[float], q: float) -> float:
            return statistics.quantiles(values, n=100)[int(q) - 1]

        print_table(
            f"Proof generation from the database at {size:,} entries",
            ["proof", "p50 ms", "p99 ms"],
            [
                ["inclusion", p(inc, 50), p(inc, 99)],
                ["consistency", p(con, 50), p(con, 99)],
            ],
            caption="target < 5 ms",
        )
        platform.close()
    if args.pg_entries:
        bench_postgresql(args.pg_entries)


if __name__ == "__main__":
    main()
