"""Small instances kept in the index database, written by the transaction of their row.

What must hold (invariant 4): an acknowledged instance is durable, blob included; a committed
row never names a blob that is not durable; a crash at any point before the commit leaves
neither the row nor the blob. The crash tests kill a real process (SIGKILL) inside the
transaction and right after the acknowledgement, then reopen the data directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from imaging_helpers import alter_inline_blob, opened, rows_in, sample, sample_bytes
from sqlalchemy import select

from hdsvault.blobs import inline
from hdsvault.db.schema import blob_chunks, imaging_instances
from hdsvault.imaging import retrieve
from hdsvault.imaging.dicomfile import parse
from hdsvault.imaging.store import ImagingStore
from hdsvault.integrity.blob_hashes import check_blobs
from hdsvault.platform import Platform
from hdsvault.records.model import Caller

SMALL, LARGE = "MR_small.dcm", "CT_small.dcm"  # 9.8 KB and 39 KB
LIMIT = 20_000  # between the two


def _keys(platform: Platform) -> dict[str, str]:
    """Instance id -> blob key."""
    it = imaging_instances.c
    with platform.engine.connect() as conn:
        return {str(i): str(k) for i, k in conn.execute(select(it.id, it.blob_key))}


def test_small_instances_live_in_the_index_large_ones_in_the_backend(
    platform: Platform, tenant: str, caller: Caller
) -> None:
    platform.settings.blobs.inline_max_bytes = LIMIT
    store = ImagingStore(platform)
    try:
        files = [sample_bytes(SMALL), sample_bytes(LARGE)]
        outcomes = store.store_many(caller, files, source="test")
        assert [o.status for o in outcomes] == ["stored", "stored"]
        small_key, large_key = (_keys(platform)[str(o.instance_id)] for o in outcomes)
        assert inline.is_inline(small_key) and not inline.is_inline(large_key)
        assert rows_in(platform, blob_chunks) == 1
        on_disk = [p for p in (platform.settings.data_dir / "blobs").rglob("*") if p.is_file()]
        assert [p.name for p in on_disk] == [large_key.rsplit("/", 1)[1]]
        # read back: the single read, the stream
        keys = retrieve.data_keys(store, tenant)
        uids = [o.study_uid for o in outcomes if o.study_uid]
        with platform.engine.connect() as conn:
            refs = retrieve.find(conn, store, tenant, uids)
        by_id = {o.instance_id: f for o, f in zip(outcomes, files, strict=True)}
        for r in refs:
            assert retrieve.read(store, tenant, r, keys) == by_id[r.id]
            assert b"".join(retrieve.stream(store, tenant, r, keys)) == by_id[r.id]
        report = check_blobs(platform)
        assert report.ok and report.checked == 2 and report.note == ""
    finally:
        store.close()


def test_verify_finds_a_tampered_inline_blob(
    platform: Platform, tenant: str, imaging: ImagingStore, caller: Caller
) -> None:
    outcome = imaging.store(caller, sample_bytes(SMALL), source="test")
    key = _keys(platform)[str(outcome.instance_id)]
    assert inline.is_inline(key)
    alter_inline_blob(platform, key, -1)
    report = check_blobs(platform)
    assert [f.problem for f in report.findings] == ["content differs from its SHA-256"]


def test_a_failed_transaction_leaves_no_inline_blob(
    platform: Platform, imaging: ImagingStore, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from hdsvault.imaging.errors import ImagingError

    def broken(*_args: object, **_kw: object) -> None:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr("hdsvault.imaging.journaling.record", broken)
    with pytest.raises(ImagingError, match="database unavailable"):
        imaging.store(caller, sample_bytes(SMALL), source="test")
    assert _keys(platform) == {} and rows_in(platform, blob_chunks) == 0


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hdsvault.access.roles import Role
    from hdsvault.access.tokens import Principal
    from hdsvault.config import load_settings
    from hdsvault.imaging import journaling
    from hdsvault.imaging.store import ImagingStore
    from hdsvault.platform import Platform
    from hdsvault.records.model import Caller

    data_dir, url, tenant, sample, mode, signal_file = sys.argv[1:]
    settings = load_settings(data_dir=Path(data_dir), database={"url": url})
    platform = Platform.open(settings)
    store = ImagingStore(platform)
    record = journaling.record

    def record_then_hang(conn, entries):
        record(conn, entries)  # every row of the instance written, its blob included
        Path(signal_file).write_text("in transaction")
        time.sleep(600)  # killed here, before the commit

    if mode == "in-transaction":
        journaling.record = record_then_hang
    caller = Caller(Principal("test:crash", tenant, Role.RADIOLOGY), tenant)
    outcome = store.store(caller, Path(sample).read_bytes(), source="crash-test")
    Path(signal_file).write_text("acknowledged " + outcome.status)
    time.sleep(600)  # killed here, after the acknowledgement
    """
)


def _run_and_kill(platform: Platform, tenant: str, mode: str, tmp_path: Path) -> str:
    """Run a store in another process, SIGKILL it at ``mode``; what it had signalled."""
    signal_file = tmp_path / f"signal-{mode}"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(platform.settings.data_dir),
            platform.settings.database_url,
            tenant,
            str(sample(SMALL)),
            mode,
            str(signal_file),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 60
        while not signal_file.exists():
            assert child.poll() is None, "the child process ended before its signal"
            assert time.monotonic() < deadline, "no signal from the child process"
            time.sleep(0.01)
        time.sleep(0.05)
        return signal_file.read_text()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)


def test_killed_inside_the_transaction_leaves_neither_row_nor_blob(
    platform: Platform, tenant: str, tmp_path: Path, imaging: ImagingStore, caller: Caller
) -> None:
    assert _run_and_kill(platform, tenant, "in-transaction", tmp_path) == "in transaction"
    assert _keys(platform) == {} and rows_in(platform, blob_chunks) == 0
    report = check_blobs(platform)
    assert report.ok and report.note == ""  # not even an orphan
    # the instance can be sent again and is stored
    assert imaging.store(caller, sample_bytes(SMALL), source="test").status == "stored"


def test_killed_after_the_acknowledgement_keeps_row_and_blob(
    platform: Platform, tenant: str, tmp_path: Path, imaging: ImagingStore, caller: Caller
) -> None:
    assert _run_and_kill(platform, tenant, "acknowledged", tmp_path) == "acknowledged stored"
    keys = _keys(platform)
    assert len(keys) == 1 and all(inline.is_inline(k) for k in keys.values())
    assert rows_in(platform, blob_chunks) == 1
    data = sample_bytes(SMALL)
    refs = retrieve.locate(imaging, caller, [parse(data).study_uid])
    keys = retrieve.data_keys(imaging, tenant)
    assert [retrieve.read(imaging, tenant, r, keys) for r in refs] == [data]
    report = check_blobs(platform)
    assert report.ok and report.checked == 1 and report.note == ""
    # sent again (the peer did not see the acknowledgement): a duplicate, nothing added
    assert imaging.store(caller, data, source="test").status == "duplicate"
    assert rows_in(platform, blob_chunks) == 1


def test_a_small_retrieval_reads_inline_blobs_with_its_lookup(
    platform: Platform, imaging: ImagingStore, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inline blobs of a retrieval that fits in memory come from the lookup's own read
    transaction, not from one statement each (nor one for all, run during the flush)."""
    files = [sample_bytes(n) for n in (SMALL, "JPEG2000.dcm")]
    outcomes = imaging.store_many(caller, files, source="test")
    uids = sorted({str(o.study_uid) for o in outcomes})

    def no_separate_read(*_args: object) -> bytes:
        raise AssertionError("inline blobs read apart from the lookup")

    monkeypatch.setattr(inline, "get", no_separate_read)
    _found, opened_files = opened(imaging, caller, uids)
    assert opened_files is not None and sorted(opened_files) == sorted(files)
