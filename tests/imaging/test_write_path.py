"""The write path under failure: blobs written while the index is prepared, nothing half-written.

A blob that cannot be stored fails its own instance only (the batch is indexed again without
it); a transaction that fails leaves no blob behind; a committed row always names a blob.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import pytest
from imaging_helpers import opened, rows_in, sample_bytes
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hdsvault.blobs import BlobError, BlobInfo, BlobStore, open_blob_store
from hdsvault.blobs.base import Payload
from hdsvault.db.schema import imaging_instances, journal_entries
from hdsvault.imaging import retrieve, sealing
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.imaging.store import ImagingStore
from hdsvault.journal import store as journal_store
from hdsvault.journal.group_commit import JournalUnavailable
from hdsvault.platform import Platform
from hdsvault.records.model import Caller

NAMES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"]


class FlakyBlobs:
    """The real blob store, but puts of payloads of one size fail (like a full disk)."""

    def __init__(self, inner: BlobStore, fail_size: int) -> None:
        self.inner, self.fail_size = inner, fail_size
        self.name = inner.name

    def put(self, key: str, data: Payload) -> BlobInfo:
        if isinstance(data, bytes | bytearray) and len(data) == self.fail_size:
            raise BlobError(f"cannot write blob {key}: No space left on device")
        return self.inner.put(key, data)

    def open(self, key: str) -> Iterator[bytes]:
        return self.inner.open(key)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        return self.inner.iter_keys(prefix)

    def prepare(self, prefixes: Iterable[str]) -> None:
        self.inner.prepare(prefixes)

    def close(self) -> None:
        self.inner.close()


def test_a_failed_blob_fails_only_its_instance(
    platform: Platform, tenant: str, caller: Caller
) -> None:
    files = [sample_bytes(n) for n in NAMES]
    platform.settings.blobs.inline_max_bytes = 0  # every blob through the backend's put
    inner = open_blob_store(platform.settings, platform.engine)
    store = ImagingStore(platform, blobs=FlakyBlobs(inner, len(files[1]) + 16 + 33))
    try:
        outcomes = store.store_many(caller, files, source="test")
        assert [o.status for o in outcomes] == ["stored", "failed", "stored"]
        assert outcomes[1].error is not None and "storage failed" in outcomes[1].error.message
        assert rows_in(platform, imaging_instances) == 2
        keys = retrieve.data_keys(store, tenant)
        with platform.engine.connect() as conn:
            refs = retrieve.find(
                conn, store, tenant, [o.study_uid for o in outcomes if o.study_uid]
            )
        assert sorted(retrieve.read(store, tenant, r, keys) for r in refs) == sorted(
            [files[0], files[2]]
        )
        assert len(list(inner.iter_keys(f"{tenant}/"))) == 2  # no blob without its row
    finally:
        store.close()


@pytest.mark.parametrize("failing", ["journal-record", "driver-statement"])
def test_a_failed_transaction_leaves_no_blob(
    platform: Platform,
    tenant: str,
    caller: Caller,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    """A transaction that fails leaves no row, no journal entry, no blob (invariants 1, 4),
    whether the failure is raised above the database or by the database itself through the
    driver's own cursor (``db/driver.py``: its error raised as SQLAlchemy's)."""
    store = ImagingStore(platform)
    entries = rows_in(platform, journal_entries)
    try:
        if failing == "journal-record":

            def broken(*_args: object, **_kw: object) -> None:
                raise OperationalError("INSERT", {}, Exception("disk I/O error"))

            monkeypatch.setattr("hdsvault.imaging.journaling.record", broken)
        else:  # the journal insert, last statement of the transaction, fails in the database
            monkeypatch.setattr(journal_store, "_insert_sql", _failing_insert)
        with pytest.raises(ImagingError, match="database unavailable"):
            store.store_many(caller, [sample_bytes(n) for n in NAMES], source="test")
        assert rows_in(platform, imaging_instances) == 0
        assert rows_in(platform, journal_entries) == entries
        assert list(store.blobs.iter_keys(f"{tenant}/")) == []
    finally:
        store.close()


def _failing_insert(mark: str) -> str:
    """A statement with the journal insert's parameters (``mark``: the driver's marker) that
    the database itself fails: on SQLite an unknown table; on PostgreSQL the session's own end
    (the connection lost in the middle of the transaction, the most common storage failure
    there)."""
    values = ", ".join([mark] * len(journal_store.ENTRY_COLUMNS))
    if mark == "?":  # sqlite3
        return f"INSERT INTO no_such_table VALUES ({values})"
    return f"SELECT pg_terminate_backend(pg_backend_pid()) FROM (VALUES ({values})) AS v"


def test_a_rotation_is_seen_by_the_next_store(
    imaging: ImagingStore, platform: Platform, tenant: str, caller: Caller
) -> None:
    """The data keys are cached by the store, but the current version is read at each store:
    after ``keys rotate`` (another process, in production) new instances use the new key."""
    from hdsvault.tenants.keys import rotate_keys

    def versions() -> list[int]:
        with platform.engine.connect() as conn:
            rows = conn.execute(
                select(
                    imaging_instances.c.key_version, imaging_instances.c.blob_key_version
                ).order_by(imaging_instances.c.created_at)
            ).all()
        return [v for row in rows for v in row]

    first, second = (sample_bytes(n) for n in NAMES[:2])
    assert imaging.store(caller, first, source="test").status == "stored"
    assert rotate_keys(platform, tenant, by="test") == 2
    assert imaging.store(caller, second, source="test").status == "stored"
    assert versions() == [1, 1, 2, 2]
    keys = retrieve.data_keys(imaging, tenant)
    with platform.engine.connect() as conn:
        refs = retrieve.find(conn, imaging, tenant, [pydicom_uid(first), pydicom_uid(second)])
    assert sorted(retrieve.read(imaging, tenant, r, keys) for r in refs) == sorted([first, second])


def pydicom_uid(data: bytes) -> str:
    from hdsvault.imaging.dicomfile import parse

    return parse(data).study_uid


def test_a_single_instance_put_that_fails_fails_alone(
    platform: Platform, tenant: str, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of one (every C-STORE) stored as a file is written in the calling thread until
    the store knows the tenant's data keys, then ahead by a pool thread (its head start); a
    failed put fails the instance either way, and leaves no blob and no row."""
    data = sample_bytes(NAMES[0])
    platform.settings.blobs.inline_max_bytes = 0  # stored as a file, through the backend's put
    inner = open_blob_store(platform.settings, platform.engine)
    store = ImagingStore(platform, blobs=FlakyBlobs(inner, len(data) + 16 + 33))
    submitted = _count_submits(store, monkeypatch)
    try:
        for ahead in (0, 1):  # keys unknown to the store yet, then known
            outcome = store.store(caller, data, source="test")
            assert outcome.status == "failed"
            assert outcome.error is not None and outcome.error.kind.name == "UNAVAILABLE"
            assert len(submitted) == ahead
            assert rows_in(platform, imaging_instances) == 0
            assert list(inner.iter_keys(f"{tenant}/")) == []
        assert store.store(caller, sample_bytes(NAMES[1]), source="test").status == "stored"
        assert len(submitted) == 2
    finally:
        store.close()


def _count_submits(store: ImagingStore, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every task the store's pool is given, recorded (and run)."""
    submitted: list[object] = []
    submit = store.pool.submit

    def counted(fn: Any, *args: Any, **kw: Any) -> Any:
        submitted.append(fn)
        return submit(fn, *args, **kw)

    monkeypatch.setattr(store.pool, "submit", counted)
    return submitted


def _blobs_are_rows(store: ImagingStore, platform: Platform, tenant: str) -> None:
    """No blob is left without its row, and each row names the key version that sealed its
    blob (what ``keys rewrap`` and shredding rely on)."""
    it = imaging_instances.c
    with platform.engine.connect() as conn:
        rows = {k: v for k, v in conn.execute(select(it.blob_key, it.blob_key_version))}
    assert set(store.blobs.iter_keys(f"{tenant}/")) == set(rows)
    for key, version in rows.items():
        assert sealing.key_version(store.blobs.open(key)) == version


@pytest.mark.parametrize("unused_by", ["duplicate", "malformed", "rotation"])
def test_a_head_start_not_used_leaves_no_blob(
    platform: Platform,
    tenant: str,
    caller: Caller,
    monkeypatch: pytest.MonkeyPatch,
    unused_by: str,
) -> None:
    """The blob written ahead of a single instance is deleted when the instance is not stored
    with it: already stored, not DICOM, or the keys rotated since the store cached them (the
    instance is then sealed again with the new keys and opens)."""
    from hdsvault.tenants.keys import rotate_keys

    platform.settings.blobs.inline_max_bytes = 0
    store = ImagingStore(platform)
    first, second = (sample_bytes(n) for n in NAMES[:2])
    try:
        assert store.store(caller, first, source="test").status == "stored"  # keys now cached
        submitted = _count_submits(store, monkeypatch)
        if unused_by == "duplicate":
            assert store.store(caller, first, source="test").status == "duplicate"
        elif unused_by == "malformed":
            garbage = b"\0" * 128 + b"DICM" + b"\xff" * len(second)
            assert store.store(caller, garbage, source="test").status == "failed"
        else:
            assert rotate_keys(platform, tenant, by="test") == 2
            assert store.store(caller, second, source="test").status == "stored"
        assert len(submitted) == 1  # the head start was made, and then not used
        _blobs_are_rows(store, platform, tenant)
        keys = retrieve.data_keys(store, tenant)
        with platform.engine.connect() as conn:
            refs = retrieve.find(conn, store, tenant, [pydicom_uid(first), pydicom_uid(second)])
        opened = sorted(retrieve.read(store, tenant, r, keys) for r in refs)
        stored = [first, second] if unused_by == "rotation" else [first]
        assert opened == sorted(stored)
    finally:
        store.close()


def test_no_instance_leaves_when_its_read_cannot_be_journaled(
    platform: Platform, imaging: ImagingStore, caller: Caller
) -> None:
    """Invariant 2: the retrieval's journal entry must be durable before any byte is served."""
    outcome = imaging.store(caller, sample_bytes("CT_small.dcm"), source="test")
    assert outcome.study_uid is not None
    platform.durable_journal().close()  # the journal writer is gone (e.g. its database is)
    with pytest.raises(ImagingError) as refused:
        retrieve.locate(imaging, caller, [outcome.study_uid])
    assert refused.value.kind is Kind.UNAVAILABLE


def test_a_small_retrieval_is_read_while_journaled_and_released_only_after(
    platform: Platform, imaging: ImagingStore, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retrieve() opens the files during the journal flush, and returns them only once the
    entry is durable; a journal that fails keeps the files in (invariant 2)."""
    data = sample_bytes("CT_small.dcm")
    study = imaging.store(caller, data, source="test").study_uid
    assert study is not None
    _found, files = opened(imaging, caller, [study])
    assert files is not None and len(files) == 1
    assert pydicom_uid(files[0]) == study
    assert opened(imaging, caller, [study], in_memory=10)[1] is None  # too big

    order: list[str] = []
    real_read = retrieve.read_into

    def read_then_note(*args: Any) -> None:
        order.append("read")
        real_read(*args)

    class SlowFailingCommit:
        def wait(self, timeout: float | None = 30.0) -> None:
            order.append("waited")
            raise JournalUnavailable("disk gone")

    journal = platform.durable_journal()
    monkeypatch.setattr(retrieve, "read_into", read_then_note)
    monkeypatch.setattr(journal, "submit", lambda entries, wake=True: SlowFailingCommit())
    with pytest.raises(ImagingError) as refused:
        opened(imaging, caller, [study])
    assert refused.value.kind is Kind.UNAVAILABLE
    assert order == ["read", "waited"]  # read during the flush, nothing returned after it


def test_a_retrieval_sees_a_rotation_and_a_shredding_at_once(
    platform: Platform, imaging: ImagingStore, tenant: str, caller: Caller
) -> None:
    """The data-key version comes with the retrieval's lookup statement (no query of its
    own): it is still read at every retrieval, so a ``keys rotate`` or a shredding by another
    process is seen by the next retrieval, not by a cache's expiry."""
    from hdsvault.tenants.keys import rotate_keys
    from hdsvault.tenants.service import shred_tenant

    data = sample_bytes("CT_small.dcm")
    study = imaging.store(caller, data, source="test").study_uid
    assert study is not None
    first, files = opened(imaging, caller, [study])
    assert first.keys.current_version == 1 and files == [data]
    assert rotate_keys(platform, tenant, by="test") == 2
    second, files = opened(imaging, caller, [study])
    assert second.keys.current_version == 2 and files == [data]  # v1 still opens
    shred_tenant(platform, tenant, by="test")
    with pytest.raises(ImagingError) as gone:
        opened(imaging, caller, [study])
    assert gone.value.kind is Kind.NOT_FOUND


@pytest.mark.parametrize("backend", ["filesystem", "database"])
def test_head_started_instances_are_stored_and_retrieved(
    platform: Platform,
    tenant: str,
    caller: Caller,
    monkeypatch: pytest.MonkeyPatch,
    backend: Literal["filesystem", "database"],
) -> None:
    """C-STOREs one after the other, each of one instance stored in the backend (files, or
    rows of the database: the head start's put then commits on its own connection while the
    calling thread reads): every one stored with its blob, which opens to what was sent."""
    platform.settings.blobs.backend = backend
    platform.settings.blobs.inline_max_bytes = 0
    store = ImagingStore(platform)
    submitted = _count_submits(store, monkeypatch)
    files = [sample_bytes(n) for n in NAMES]
    try:
        assert [store.store(caller, f, source="test").status for f in files] == ["stored"] * 3
        assert len(submitted) == 2  # the first C-STORE taught the store the tenant's keys
        _blobs_are_rows(store, platform, tenant)
        keys = retrieve.data_keys(store, tenant)
        with platform.engine.connect() as conn:
            refs = retrieve.find(conn, store, tenant, [pydicom_uid(f) for f in files])
        assert sorted(retrieve.read(store, tenant, r, keys) for r in refs) == sorted(files)
    finally:
        store.close()


def test_a_head_started_blob_is_durable_before_its_row(
    platform: Platform, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 4 on the head-start path: the blob written ahead, even when it is slower than
    everything else, is durable before the index transaction begins."""
    platform.settings.blobs.inline_max_bytes = 0
    events: list[str] = []

    class SlowBlobs(FlakyBlobs):
        def put(self, key: str, data: Payload) -> BlobInfo:
            time.sleep(0.2)  # a slow disk: the calling thread is done long before
            info = super().put(key, data)
            events.append("blob durable")
            return info

    store = ImagingStore(
        platform, blobs=SlowBlobs(open_blob_store(platform.settings, platform.engine), -1)
    )
    index = store._index

    def noted(*args: Any) -> Any:
        events.append("index")
        return index(*args)

    monkeypatch.setattr(store, "_index", noted)
    submitted = _count_submits(store, monkeypatch)
    try:
        for name in NAMES[:2]:  # the second one gets a head start
            assert store.store(caller, sample_bytes(name), source="test").status == "stored"
        assert len(submitted) == 1
        assert events == ["blob durable", "index"] * 2
    finally:
        store.close()
