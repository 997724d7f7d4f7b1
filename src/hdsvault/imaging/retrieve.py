"""Retrieval (WADO-RS, C-MOVE, C-GET): locate instances, journal, then open them.

``locate`` authorizes, finds the instances by their UID tokens, and journals the retrieval
(committed) before it returns: the caller may then open and send the instances (invariant 2).
``retrieve`` also opens a retrieval within the caller's memory budget into a body the caller
lays out, while its journal entry is being flushed, and hands it over once the entry is
durable; a larger one is opened afterwards, one instance (or one AEAD segment) at a time.
Sealed blobs are read through the store's caches (:mod:`hdsvault.blobs.cache`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import TypeVar

from sqlalchemy import Connection, Dialect, Select, Table, bindparam, func, select

from hdsvault.access.decision import Operation
from hdsvault.blobs import BlobError, BlobNotFound, inline
from hdsvault.blobs.cache import SealedBlobCache
from hdsvault.crypto.aead import DataKeys
from hdsvault.crypto.errors import DecryptionError
from hdsvault.crypto.keyring import DATA
from hdsvault.db import driver
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import imaging_instances, imaging_series, imaging_studies, tenant_keys
from hdsvault.imaging import index as ix
from hdsvault.imaging import journaling, sealing
from hdsvault.imaging.dicomfile import Json, full_json, load
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.imaging.store import ImagingStore
from hdsvault.journal.entry import Outcome
from hdsvault.journal.group_commit import JournalUnavailable, Pending
from hdsvault.records.model import Caller

_T = TypeVar("_T")


@dataclass(frozen=True)
class InstanceRef:
    """One stored instance, as the index knows it (no clear DICOM attribute)."""

    id: str
    study_id: str
    series_id: str
    sop_class_uid: str
    transfer_syntax_uid: str
    size: int
    blob_key: str
    patient_ref: str | None


def _ids_of(table: Table, level: str, n: int) -> Select[tuple[str]]:
    """The ids of ``table``'s rows with the ``n`` uid tokens bound as ``<level>_0..n-1``, as
    a subquery of :func:`find`'s one statement (a separate query per level cost a round trip
    each on every retrieval)."""
    return select(table.c.id).where(
        table.c.tenant_id == bindparam("tenant"),
        table.c.uid_token.in_([bindparam(f"{level}_{i}") for i in range(n)]),
    )


@lru_cache(maxsize=128)
def _find_sql(dialect: Dialect, study: int, series: int, sop: int) -> driver.Compiled:
    """:func:`find`'s statement for that many UIDs of each level, compiled once for
    ``dialect`` (:func:`hdsvault.db.driver.compiled`).

    Why compiled here and run through the driver's cursor (:mod:`hdsvault.db.driver`): each
    retrieval's lookup through SQLAlchemy's execution (and its expanding ``IN`` parameters,
    compiled again at each execution) was ~20 % of the interpreter's time per single-
    instance WADO-RS request (``py-spy --gil``, docs/imaging-bench.md).

    Each row also carries the tenant's current data-key version, read by the same statement
    rather than by a query of the keyring's own (~0.15 ms per retrieval, measured): the
    version is still read at every retrieval, so a ``keys rotate`` by another process is seen
    by the next one, as the keyring guarantees."""
    it, st, tk = imaging_instances.c, imaging_studies.c, tenant_keys.c
    version = (
        select(func.max(tk.version))
        .where(tk.tenant_id == bindparam("tenant"), tk.purpose == bindparam("purpose"))
        .scalar_subquery()
    )
    stmt = (
        select(
            it.id,
            it.study_id,
            it.series_id,
            it.sop_class_uid,
            it.transfer_syntax_uid,
            it.size,
            it.blob_key,
            st.patient_ref,
            version,
        )
        .join(imaging_studies, (st.tenant_id == it.tenant_id) & (st.id == it.study_id))
        .where(it.tenant_id == bindparam("tenant"))
        .order_by(it.created_at, it.id)
    )
    if study:
        stmt = stmt.where(it.study_id.in_(_ids_of(imaging_studies, "study", study)))
    if series:
        stmt = stmt.where(it.series_id.in_(_ids_of(imaging_series, "series", series)))
    if sop:
        stmt = stmt.where(it.uid_token.in_([bindparam(f"instance_{i}") for i in range(sop)]))
    return driver.compiled(stmt, dialect)


def find(
    conn: Connection,
    store: ImagingStore,
    tenant: str,
    study_uids: Sequence[str] = (),
    series_uids: Sequence[str] = (),
    sop_uids: Sequence[str] = (),
) -> list[InstanceRef]:
    """Instances under the given UIDs (each list narrows; an empty list does not)."""
    return _find(conn, store, tenant, study_uids, series_uids, sop_uids)[0]


def _find(
    conn: Connection,
    store: ImagingStore,
    tenant: str,
    study_uids: Sequence[str],
    series_uids: Sequence[str],
    sop_uids: Sequence[str],
) -> tuple[list[InstanceRef], int | None]:
    """:func:`find`, and the tenant's current data-key version (None: no instance found, or
    no keys)."""
    if not (study_uids or series_uids or sop_uids):
        raise ImagingError(Kind.INVALID, "a retrieval names at least one UID")
    index = store.index(conn, tenant)
    values: dict[str, object] = {"tenant": tenant, "purpose": DATA}
    for level, uids in (("study", study_uids), ("series", series_uids), ("instance", sop_uids)):
        for i, uid in enumerate(uids):
            values[f"{level}_{i}"] = ix.uid_token(index, level, uid)
    find = _find_sql(conn.dialect, len(study_uids), len(series_uids), len(sop_uids))
    rows = driver.execute(conn, find.sql, find.params(values))
    version = rows[0][-1] if rows else None
    return [InstanceRef(*r[:-1]) for r in rows], None if version is None else int(version)


Uids = tuple[Sequence[str], Sequence[str], Sequence[str]]
"""A retrieval's study, series and SOP instance UIDs (each list narrows; an empty one does not)."""


@dataclass(frozen=True)
class Located:
    """What a retrieval found: the instances, the data keys, the queued journal entry (not
    yet durable) and the sealed inline blobs read with the lookup."""

    refs: list[InstanceRef]
    keys: DataKeys
    pending: Pending
    sealed: dict[str, bytes]


def _located(
    store: ImagingStore,
    caller: Caller,
    study_uids: Sequence[str],
    series_uids: Sequence[str],
    sop_uids: Sequence[str],
    what: str,
    in_memory: int = 0,
) -> Located:
    """Authorize, find, and queue the retrieval's journal entries (not yet durable).

    With ``in_memory``, the inline blobs of a retrieval of at most that many bytes are read
    by the same read transaction as the lookup, before the journal entry is queued. Why:
    read by a statement of their own while the journal's commit was being flushed, a study of
    40 x 39 KB took 0.4-0.6 ms longer than the same study read from files (measured); read
    here they cost one statement and no contention, and only opening them overlaps the flush.
    """
    journaling.allow(store.engine, caller, Operation.READ)
    uids = (study_uids, series_uids, sop_uids)
    with read_connection(store.engine) as conn:
        refs, keys, sealed = _lookup(conn, store, caller.tenant, uids, in_memory)
    return Located(refs, keys, _journaled(store, caller, refs, keys, uids, what), sealed)


def located_held(
    conn: Connection,
    store: ImagingStore,
    caller: Caller,
    uids: Uids,
    *,
    budget: int,
    wake: bool = True,
) -> Located | None:
    """:func:`_located` for a retrieval the caller has authorized already, on ``conn`` (in a
    read transaction), if opening it reads nothing more: instances found, at most ``budget``
    bytes, each blob read with the lookup (inline) or held in the caches, one segment each.
    None otherwise, with nothing journaled: take :func:`retrieve`.

    Why: an event loop can then serve the retrieval itself, without a hand-off to a worker
    thread and back (docs/imaging-bench.md), and never waits there for a file or a lock.
    ``wake`` false: the entries are queued without waking the journal's writer, which the
    caller wakes once it has nothing else ready (:func:`_journaled`)."""
    refs, keys, sealed = _lookup(conn, store, caller.tenant, uids, budget)
    if not refs or sum(r.size for r in refs) > budget:
        return None
    if any(r.blob_key not in sealed and not held(store, [r]) for r in refs):
        return None
    pending = _journaled(store, caller, refs, keys, uids, "instances", wake=wake)
    return Located(refs, keys, pending, sealed)


def _lookup(
    conn: Connection, store: ImagingStore, tenant: str, uids: Uids, in_memory: int
) -> tuple[list[InstanceRef], DataKeys, dict[str, bytes]]:
    """The instances, the tenant's data keys, and the sealed inline blobs if they total at
    most ``in_memory`` bytes."""
    refs, version = _find(conn, store, tenant, *uids)
    # the version came with the instances
    keys = store.current_keys(conn, tenant, version) if refs else store.keys(conn, tenant)
    small = [r.blob_key for r in refs if inline.is_inline(r.blob_key)]
    fits = in_memory and small and sum(r.size for r in refs) <= in_memory
    return refs, keys, store.inline_cache.fetch(conn, small) if fits else {}


def _journaled(
    store: ImagingStore,
    caller: Caller,
    refs: list[InstanceRef],
    keys: DataKeys,
    uids: Uids,
    what: str,
    *,
    wake: bool = True,
) -> Pending:
    """Queue the retrieval's journal entries (group commit: one flush shared with the other
    reads of the moment); ``wake`` false: the caller wakes the journal's writer itself
    (:meth:`GroupCommitJournal.submit`)."""
    study_uids, series_uids, sop_uids = uids
    detail = journaling.seal_detail(
        keys,
        caller,
        {
            "what": what,
            "study": list(study_uids),
            "series": list(series_uids),
            "sop": list(sop_uids),
        },
    )
    touched: list[tuple[str, str | None]] = []
    for r in refs:
        touched += [
            (f"ImagingStudy/{r.study_id}", r.patient_ref),
            (f"DicomInstance/{r.id}", r.patient_ref),
        ]
    outcome = Outcome.SUCCESS if refs else Outcome.MINOR_FAILURE
    entries = journaling.entries(
        caller, journaling.RETRIEVE, touched, outcome=outcome, detail=detail
    )
    try:
        return store.platform.durable_journal().submit(entries, wake=wake)
    except JournalUnavailable as exc:
        raise ImagingError(Kind.UNAVAILABLE, str(exc)[:300]) from None


def durable(pending: Pending, timeout: float | None = 30.0) -> None:
    """Wait for the retrieval's journal entries: no trace, no data (invariant 2)."""
    try:
        pending.wait(timeout)
    except JournalUnavailable as exc:
        raise ImagingError(Kind.UNAVAILABLE, str(exc)[:300]) from None


def locate(
    store: ImagingStore,
    caller: Caller,
    study_uids: Sequence[str] = (),
    series_uids: Sequence[str] = (),
    sop_uids: Sequence[str] = (),
    *,
    what: str = "instances",
) -> list[InstanceRef]:
    """Authorize, find, journal (committed): the instances may then leave the server."""
    found = _located(store, caller, study_uids, series_uids, sop_uids, what)
    durable(found.pending)
    if not found.refs:
        raise ImagingError(Kind.NOT_FOUND, "no stored instance matches")
    return found.refs


Layout = Callable[[list["InstanceRef"]], tuple[bytearray, list[memoryview]]]
"""Where a retrieval opens its instances: for the instances found, a body and, per instance,
the writable view its plaintext goes to (e.g. :func:`hdsvault.imaging.multipart.frame_into`)."""


@dataclass(frozen=True)
class Retrieval:
    """Located instances, journaled durably. When they fit the caller's memory budget they are
    opened already, into ``body`` (laid out by the caller); otherwise ``body`` is None: open
    them with :func:`read_into` or :func:`stream`, with ``keys``, the tenant's data keys looked
    up by the retrieval."""

    refs: list[InstanceRef]
    keys: DataKeys
    body: bytearray | None


def retrieve(
    store: ImagingStore,
    caller: Caller,
    study_uids: Sequence[str] = (),
    series_uids: Sequence[str] = (),
    sop_uids: Sequence[str] = (),
    *,
    in_memory: int,
    layout: Layout,
) -> Retrieval:
    """:func:`locate`, and the files opened into the body ``layout`` builds if they total at
    most ``in_memory`` bytes.

    The files are read (inline blobs: with the lookup) and decrypted while the journal entry
    is being flushed, and returned only once it is durable: a small study costs one flush
    *or* its reading, not both.
    """
    found = _located(
        store, caller, study_uids, series_uids, sop_uids, "instances", in_memory=in_memory
    )
    refs, keys = found.refs, found.keys
    body = None
    try:
        if refs and sum(r.size for r in refs) <= in_memory:
            body = open_body(store, caller.tenant, found, layout)
    finally:
        durable(found.pending)
    if not refs:
        raise ImagingError(Kind.NOT_FOUND, "no stored instance matches")
    return Retrieval(refs, keys, body)


def open_body(store: ImagingStore, tenant: str, found: Located, layout: Layout) -> bytearray:
    """The instances of ``found`` opened into the body ``layout`` builds for them."""
    body, slots = layout(found.refs)
    for r, slot in zip(found.refs, slots, strict=True):
        read_into(store, tenant, r, found.keys, slot, found.sealed.get(r.blob_key))
    return body


def data_keys(store: ImagingStore, tenant: str) -> DataKeys:
    """The tenant's data keys, looked up once per retrieval and used for all its instances."""
    with read_connection(store.engine) as conn:
        return store.keys(conn, tenant)


def read(
    store: ImagingStore,
    tenant: str,
    ref: InstanceRef,
    keys: DataKeys,
    blob: bytes | None = None,
) -> bytes:
    """The DICOM file of ``ref`` (its sealed ``blob`` if read already), opened (call only
    after :func:`locate`)."""
    return _opened(store, tenant, ref, blob, lambda r, b: sealing.open_blob(keys, tenant, r.id, b))


def read_into(
    store: ImagingStore,
    tenant: str,
    ref: InstanceRef,
    keys: DataKeys,
    out: memoryview,
    blob: bytes | None = None,
) -> None:
    """:func:`read` straight into ``out``, exactly ``ref.size`` bytes long (the size the index
    recorded; a blob that opens to another size is refused)."""

    def into(r: InstanceRef, b: bytes) -> None:
        if sealing.plaintext_size(b) != out.nbytes:
            raise DecryptionError(f"holds another size than the {out.nbytes} bytes indexed")
        sealing.open_blob_into(keys, tenant, r.id, b, out)

    _opened(store, tenant, ref, blob, into)


def _opened(
    store: ImagingStore,
    tenant: str,
    ref: InstanceRef,
    blob: bytes | None,
    opener: Callable[[InstanceRef, bytes], _T],
) -> _T:
    """``opener(ref, sealed blob)``, the blob read unless given; failures as ImagingError."""
    try:
        if blob is None:
            try:
                blob = _sealed(store, ref.blob_key)
            except BlobNotFound:
                ref = _moved(store, tenant, ref)
                blob = _sealed(store, ref.blob_key)
        return opener(ref, blob)
    except BlobNotFound:
        raise ImagingError(Kind.UNAVAILABLE, f"instance {ref.id}: blob missing") from None
    except (BlobError, DecryptionError) as exc:
        raise ImagingError(Kind.UNAVAILABLE, f"instance {ref.id}: {exc}") from None


def _sealed(store: ImagingStore, key: str) -> bytes:
    """A blob's sealed bytes, through the store's caches (:mod:`hdsvault.blobs.cache`):
    inline ones from the index database whatever the store's backend object
    (:mod:`hdsvault.blobs.inline`), the others from the backend."""
    read = partial(inline.get, store.engine) if inline.is_inline(key) else store.blobs.get
    return _cache_of(store, key).get(key, read)


def _cache_of(store: ImagingStore, key: str) -> SealedBlobCache:
    """The cache :func:`_sealed` reads ``key`` through."""
    return store.inline_cache if inline.is_inline(key) else store.file_cache


def held(store: ImagingStore, refs: Sequence[InstanceRef]) -> bool:
    """Whether opening ``refs`` reads nothing: each is one segment and its sealed blob is in
    the store's cache, right now (a later eviction means a read after all, not an error)."""
    return all(
        one_segment(store, r) and _cache_of(store, r.blob_key).holds(r.blob_key) for r in refs
    )


def one_segment(store: ImagingStore, ref: InstanceRef) -> bool:
    """Whether ``ref`` is sealed as one AEAD segment (most instances; every inline one): it is
    then read and opened whole, in one call; a larger one is opened segment by segment."""
    return ref.size <= store.chunk or inline.is_inline(ref.blob_key)


def stream(store: ImagingStore, tenant: str, ref: InstanceRef, keys: DataKeys) -> Iterator[bytes]:
    """The DICOM file of ``ref`` as plaintext pieces: memory of one AEAD segment at most.

    An instance of one segment (most of them) is read in one call and opened in place; a
    larger one is streamed segment by segment.
    """
    if one_segment(store, ref):
        return iter((read(store, tenant, ref, keys),))
    try:
        parts = store.blobs.open(ref.blob_key)
    except BlobNotFound:
        ref = _moved(store, tenant, ref)
        parts = store.blobs.open(ref.blob_key)
    return sealing.open_stream(keys, tenant, ref.id, parts)


def _moved(store: ImagingStore, tenant: str, ref: InstanceRef) -> InstanceRef:
    """``ref`` with the blob key its row names now: a rewrap may have moved the blob (and
    deleted the old one) since the instance was located. Raises BlobNotFound if it did not."""
    with read_connection(store.engine) as conn:
        key = conn.execute(
            select(imaging_instances.c.blob_key).where(
                imaging_instances.c.tenant_id == tenant, imaging_instances.c.id == ref.id
            )
        ).scalar_one_or_none()
    if key is None or key == ref.blob_key:
        raise BlobNotFound(f"no blob {ref.blob_key}")
    return replace(ref, blob_key=str(key))


def metadata(store: ImagingStore, caller: Caller, refs: Sequence[InstanceRef]) -> list[Json]:
    """Full headers of ``refs`` (already located and journaled), as DICOM JSON.

    Read from the stored files (opened one at a time): the index keeps key attributes only.
    """
    out: list[Json] = []
    keys = data_keys(store, caller.tenant)
    for ref in refs:
        meta = full_json(read(store, caller.tenant, ref, keys))
        meta["00020010"] = {"vr": "UI", "Value": [ref.transfer_syntax_uid]}
        out.append(dict(sorted(meta.items())))
    return out


_FRAME_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


def frames(data: bytes, numbers: Sequence[int]) -> tuple[list[bytes], str]:
    """Frames ``numbers`` (1-based) of a DICOM file, as stored (no transcoding)."""
    from pydicom.encaps import generate_frames

    ds = load(data)
    if "PixelData" not in ds:
        raise ImagingError(Kind.NOT_FOUND, "the instance has no pixel data")
    ts = str(ds.file_meta.TransferSyntaxUID)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    for k in numbers:
        if not 1 <= k <= n:
            raise ImagingError(Kind.NOT_FOUND, f"frame {k} does not exist (1..{n})")
    pixel = ds.PixelData
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        all_frames = list(generate_frames(pixel, number_of_frames=n))
        return [all_frames[k - 1] for k in numbers], _FRAME_TYPES.get(
            ts, "application/octet-stream"
        )
    size = len(pixel) // n
    return [pixel[(k - 1) * size : k * size] for k in numbers], "application/octet-stream"
