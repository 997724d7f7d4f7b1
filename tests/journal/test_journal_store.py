"""The journal in the database: every tampering is caught and named; writes and traces are atomic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from hdsvault.db.schema import (
    journal_checkpoints,
    journal_entries,
    journal_nodes,
    resource_versions,
)
from hdsvault.journal import service
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome
from hdsvault.journal.merkle import leaf_hash
from hdsvault.journal.sequencer import InconsistentLog, integrate
from hdsvault.journal.store import row_to_entry
from hdsvault.platform import Platform

ROOT = Path(__file__).resolve().parents[2]


def entry(log_id: str, i: int) -> JournalEntry:
    return JournalEntry(
        log_id=log_id,
        time=datetime.now(UTC),
        event_type="fhir.read",
        category=Category.ACCESS,
        action=Action.READ,
        outcome=Outcome.SUCCESS,
        actor=f"token:{i:024d}",
        objects=(f"Patient/p{i}",),
        patient=f"Patient/p{i}",
        detail_sealed=b"\x01sealed" + bytes([i % 256]),
    )


def fill(platform: Platform, log_id: str, n: int, batches: int = 3) -> None:
    """Append ``n`` entries in ``batches`` integrations (so several checkpoints exist)."""
    per = -(-n // batches)
    for start in range(0, n, per):
        with platform.engine.begin() as conn:
            for i in range(start, min(n, start + per)):
                service.record(conn, entry(log_id, i))
        service.integrate(platform)


def verify(platform: Platform, note: str | None = None):  # type: ignore[no-untyped-def]
    report = service.verify(platform, external_note=note)
    return report, [p for p in report.problems if p.log_id == "t"]


def test_clean_journal_verifies(platform: Platform) -> None:
    fill(platform, "t", 40)
    report, _ = verify(platform)
    assert report.ok, report.problems
    log = next(r for r in report.logs if r.log_id == "t")
    assert (log.entries, log.checkpoints, log.pending) == (40, 3, 0)


def _set(platform: Platform, at: int, **values: object) -> None:
    with platform.engine.begin() as conn:
        conn.execute(
            update(journal_entries)
            .where(journal_entries.c.log_id == "t", journal_entries.c.seq == at)
            .values(**values)
        )


def test_edited_entry_is_named(platform: Platform) -> None:
    fill(platform, "t", 30)
    _set(platform, 17, actor="token:someone-else")
    report, problems = verify(platform)
    assert not report.ok
    assert problems[0].index == 17 and problems[0].kind == "altered"


def test_deleted_entry_is_named(platform: Platform) -> None:
    fill(platform, "t", 30)
    with platform.engine.begin() as conn:
        conn.execute(
            delete(journal_entries).where(
                journal_entries.c.seq == 11, journal_entries.c.log_id == "t"
            )
        )
    _, problems = verify(platform)
    assert problems[0].index == 11 and problems[0].kind == "missing"


def test_swapped_entries_are_named(platform: Platform) -> None:
    fill(platform, "t", 30)
    _set(platform, 5, seq=-1)
    _set(platform, 9, seq=5)
    _set(platform, -1, seq=9)
    _, problems = verify(platform)
    assert [p.index for p in problems if p.kind == "altered"][:2] == [5, 9]


def test_truncated_tail_is_named(platform: Platform) -> None:
    fill(platform, "t", 30)
    with platform.engine.begin() as conn:
        conn.execute(
            delete(journal_entries).where(
                journal_entries.c.seq >= 25, journal_entries.c.log_id == "t"
            )
        )
    _, problems = verify(platform)
    assert any(p.kind == "truncated" and p.index == 25 for p in problems)


def test_forged_entry_with_rebuilt_tree_is_named_by_its_mac(platform: Platform) -> None:
    """An attacker with database access but no KEK rewrites an entry, its leaf hash and the tree."""
    fill(platform, "t", 32, batches=1)
    with platform.engine.begin() as conn:
        row = conn.execute(
            select(journal_entries).where(
                journal_entries.c.log_id == "t", journal_entries.c.seq == 20
            )
        ).one()
        forged = row_to_entry(row)
        forged = JournalEntry.from_fields({**forged.public_fields(), "actor": "token:innocent"})
        conn.execute(
            update(journal_entries)
            .where(journal_entries.c.id == row.id)
            .values(actor="token:innocent", leaf_hash=leaf_hash(forged.canonical_bytes(20)))
        )
        conn.execute(delete(journal_nodes).where(journal_nodes.c.log_id == "t"))
    _, problems = verify(platform)
    assert problems[0].index == 20 and problems[0].kind == "forged"
    assert any(p.kind == "root-mismatch" for p in problems)


def test_full_rewrite_with_all_keys_is_caught_by_an_external_checkpoint(
    platform: Platform, tmp_path: Path
) -> None:
    """Even someone holding every key cannot make a rewritten log consistent with a kept checkpoint."""
    fill(platform, "t", 24, batches=1)
    kept = service.latest_checkpoint(platform, "t")  # a witness keeps this
    signer = platform.journal_signer()
    with platform.engine.begin() as conn:
        conn.execute(delete(journal_checkpoints).where(journal_checkpoints.c.log_id == "t"))
        conn.execute(delete(journal_nodes).where(journal_nodes.c.log_id == "t"))
        conn.execute(
            update(journal_entries)
            .where(journal_entries.c.log_id == "t")
            .values(seq=None, leaf_hash=None, mac=None)
        )
        conn.execute(
            update(journal_entries)
            .where(journal_entries.c.log_id == "t", journal_entries.c.actor == f"token:{3:024d}")
            .values(actor="token:innocent")
        )
        from hdsvault.db.schema import journal_logs

        conn.execute(update(journal_logs).where(journal_logs.c.log_id == "t").values(size=0))
        integrate(conn, signer, "t")  # re-sequence and re-sign the forged log
    report, _ = verify(platform)
    assert report.ok  # internally consistent: only a witness can tell
    report, problems = verify(platform, kept)
    assert not report.ok
    assert any(p.kind == "root-mismatch" and p.index == 23 for p in problems), problems


def test_sequencer_refuses_to_extend_a_tampered_tree(platform: Platform) -> None:
    fill(platform, "t", 16, batches=1)
    with platform.engine.begin() as conn:
        conn.execute(
            update(journal_nodes)
            .where(journal_nodes.c.log_id == "t", journal_nodes.c.level == 4)
            .values(hash=b"\x00" * 32)
        )
        service.record(conn, entry("t", 99))
    with pytest.raises(InconsistentLog), platform.engine.begin() as conn:
        integrate(conn, platform.journal_signer(), "t")


def test_failed_transaction_leaves_no_entry(platform: Platform) -> None:
    with pytest.raises(RuntimeError), platform.engine.begin() as conn:
        service.record(conn, entry("t", 1))
        raise RuntimeError("the write failed after journaling")
    with platform.engine.connect() as conn:
        assert (
            conn.execute(
                select(func.count())
                .select_from(journal_entries)
                .where(journal_entries.c.log_id == "t")
            ).scalar_one()
            == 0
        )


def test_inclusion_proof_checks_with_the_standalone_verifier(
    platform: Platform, tmp_path: Path
) -> None:
    fill(platform, "t", 21)
    proof = service.prove_inclusion(platform, "t", 13)
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    (tmp_path / "cp").write_text(proof["checkpoint"])
    cmd = [
        sys.executable,
        "-I",
        str(ROOT / "tools/verify_journal.py"),
        "inclusion",
        "--key",
        proof["verifier_key"],
        "--checkpoint",
        str(tmp_path / "cp"),
        str(tmp_path / "proof.json"),
    ]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    proof["leaf_hash"] = "00" * 32
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    assert subprocess.run(cmd, capture_output=True).returncode == 1


WRITER = textwrap.dedent(
    """
    import sys, itertools
    from datetime import datetime, UTC
    from sqlalchemy import insert
    from hdsvault.config import load_settings
    from hdsvault.platform import Platform
    from hdsvault.db.schema import resource_versions
    from hdsvault.journal import service
    from hdsvault.journal.entry import JournalEntry, Category, Action, Outcome
    platform = Platform.open(load_settings(data_dir=sys.argv[1], database={"url": sys.argv[2]}))
    tag = sys.argv[3]
    print("ready", flush=True)
    for i in itertools.count():
        with platform.engine.begin() as conn:
            conn.execute(insert(resource_versions).values(
                tenant_id="750712184", resource_type="Patient", resource_id=f"{tag}-{i}",
                version_id=1, key_version=1, body=b"x", deleted=False,
                last_updated=datetime.now(UTC)))
            service.record(conn, JournalEntry(
                log_id="750712184", time=datetime.now(UTC), event_type="test.write",
                category=Category.MODIFICATION, action=Action.CREATE, outcome=Outcome.SUCCESS,
                actor="test", objects=(f"Patient/{tag}-{i}",)))
        if i % 50 == 0:
            service.integrate(platform)
    """
)


def test_sigkill_mid_write_leaves_data_and_journal_consistent(
    platform: Platform, tenant: str, tmp_path: Path
) -> None:
    """Several writer processes killed with SIGKILL: every stored write has its entry, and back."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    url = platform.settings.database_url
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(platform.settings.data_dir), url, f"w{k}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", (
            p.stderr.read() if p.stderr else ""
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with platform.engine.connect() as conn:
            if (
                conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()
                >= 150
            ):
                break
        time.sleep(0.1)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    with platform.engine.connect() as conn:
        written = set(conn.execute(select(resource_versions.c.resource_id)).scalars())
        traced = {
            json.loads(o)[0].removeprefix("Patient/")
            for o in conn.execute(
                select(journal_entries.c.objects).where(
                    journal_entries.c.event_type == "test.write"
                )
            ).scalars()
        }
    assert len(written) >= 150
    assert written == traced
    service.integrate(platform)
    report = service.verify(platform)
    assert report.ok, report.problems
