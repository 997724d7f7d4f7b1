"""The imaging store: shared state, and the write path (STOW-RS, C-STORE).

Write path of a batch of instances (one STOW-RS request, or one C-STORE)::

    authorize -> parse headers (pixel data untouched)
      -> one lookup: current data-key version, duplicates, known studies and series
      -> seal + put blobs (durable; in background threads,  | seal attributes, tokens
         in the calling thread for a batch of one)
      -> wait for the blobs -> BEGIN -> create new studies/series, instance rows, tokens,
         journal entries -> COMMIT -> acknowledge

Per instance the lookup and the transaction are a handful of statements run by the driver's
own cursor (:mod:`hdsvault.db.driver`: no SQLAlchemy compilation, execution context or result
object per statement), because a C-STORE is a batch of one and pays the whole path for each
instance.

The index transaction starts once the batch's blobs are durable, so a committed row always
points to a durable blob, and the index row, its tokens and its journal entry commit together
(invariant 1). What needs no write lock is done while the blobs are written, and the write
lock is never held while waiting for a blob. A blob that fails fails its own instance only.
If the transaction fails the blobs just written are deleted; a crash in between leaves an
unreferenced blob (an orphan, harmless), never an acknowledged instance without its data
(invariant 4).

A SOP Instance UID already stored is not overwritten (first write wins, like Orthanc's
default ``OverwriteInstances: false``): the store answers success and journals the attempt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from hdsvault.access.decision import Operation
from hdsvault.blobs import BlobError, BlobStore, inline, open_blob_store
from hdsvault.blobs.cache import SealedBlobCache
from hdsvault.crypto.aead import DataKeys, SealContext
from hdsvault.crypto.blind_index import BlindIndex
from hdsvault.crypto.keyring import DATA, TenantKeysMissing
from hdsvault.crypto.sealed import imaging_meta_context
from hdsvault.db import driver
from hdsvault.db.engine import is_sqlite, marker, read_connection
from hdsvault.db.schema import imaging_series, imaging_studies, imaging_tokens
from hdsvault.imaging import index as ix
from hdsvault.imaging import journaling, sealing
from hdsvault.imaging.dicomfile import Json, ParsedInstance, all_values, parse
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.platform import Platform
from hdsvault.records.model import Caller

_INSTANCE_COLUMNS = (
    "tenant_id", "id", "study_id", "series_id", "uid_token", "sop_class_uid",
    "transfer_syntax_uid", "size", "blob_key", "blob_sha256", "chunk_bytes", "key_version",
    "blob_key_version", "meta", "source", "created_at",
)  # fmt: skip
"""Columns of the per-instance insert, sent through the driver (no per-row SQLAlchemy work)."""
STUDY_KIND = "imaging/study"
SERIES_KIND = "imaging/series"
INSTANCE_META_KIND = "imaging/instance-meta"
BLOB_WORKERS = 4
"""Blob puts in flight per store: concurrent fsyncs share the file system's journal commits."""


def meta_context(kind: str, tenant: str, item_id: str) -> SealContext:
    """Context of a sealed metadata column: bound to its tenant, level and row id."""
    return imaging_meta_context(kind, tenant, item_id)


def seal_json(keys: DataKeys, ctx: SealContext, value: Json) -> bytes:
    return bytes(keys.seal(json.dumps(value, separators=(",", ":")).encode(), ctx))


def open_json(keys: DataKeys, ctx: SealContext, blob: bytes) -> Json:
    data: Json = json.loads(keys.open(blob, ctx))
    return data


def db_time(conn: Connection, t: datetime) -> Any:
    """``t`` as a driver parameter of a ``DateTime`` column, stored exactly as SQLAlchemy
    stores it (SQLite: naive UTC text; PostgreSQL: the aware datetime)."""
    if conn.dialect.name == "sqlite":
        return t.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return t


def blob_key(tenant: str, instance_id: str) -> str:
    return f"{tenant}/{instance_id[:2]}/{instance_id}"


def blob_prefixes(tenant: str) -> list[str]:
    """Every directory :func:`blob_key` can name for ``tenant`` (ids are UUIDs: 256)."""
    return [f"{tenant}/{h:02x}" for h in range(256)]


@dataclass
class StoreOutcome:
    """What happened to one instance of a store request."""

    sop_uid: str | None
    sop_class_uid: str | None
    status: str  # "stored" | "duplicate" | "failed"
    error: ImagingError | None = None
    instance_id: str | None = None
    study_id: str | None = None
    study_uid: str | None = None


@dataclass
class _Pending:
    """One instance of a batch on its way in."""

    pos: int
    parsed: ParsedInstance
    instance_id: str
    key: str
    uid_token: bytes
    sha256: bytes = b""  # of the sealed blob, once durable (inline: once sealed)
    sealed: bytearray | None = None  # an inline blob, written by the index transaction
    meta: bytes = b""  # sealed key attributes
    tokens: frozenset[bytes] = frozenset()  # blind-index tokens of the instance


@dataclass(frozen=True)
class _Known:
    """Studies and series of a batch already in the index, found before the transaction."""

    studies: dict[str, tuple[str, str | None]]  # study uid -> (id, patient_ref)
    series: dict[str, tuple[str, str]]  # series uid -> (id, study id)


@dataclass
class _Found:
    """What :meth:`ImagingStore._lookup` learnt before a batch is written."""

    key_version: int | None  # the tenant's current data-key version (None: no keys)
    tokens: dict[str, bytes]  # SOP Instance UID -> its uid token
    instances: dict[bytes, str]  # uid token -> id, of the instances stored already
    known: _Known


class ImagingStore:
    """Shared state of the imaging services (thread-safe): platform, blob store, FHIR link."""

    def __init__(
        self, platform: Platform, blobs: BlobStore | None = None, fhir: Any = None
    ) -> None:
        self.platform = platform
        self.engine = platform.engine
        self.settings = platform.settings
        self.blobs = blobs or open_blob_store(platform.settings, platform.engine)
        self.chunk = platform.settings.blobs.chunk_bytes
        self.inline_max = platform.settings.blobs.inline_max_bytes
        self.inline_cache = SealedBlobCache(platform.settings.blobs.inline_cache_bytes)
        self.file_cache = SealedBlobCache(platform.settings.blobs.file_cache_bytes)
        self._fhir = fhir
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=BLOB_WORKERS, thread_name_prefix="blob-put")
        self._keys: dict[str, DataKeys] = {}  # tenant -> data keys (see current_keys)
        self._prepared: set[str] = set()  # tenants whose blob fan-out is ready

    @property
    def fhir(self) -> Any:
        """The FHIR writer ImagingStudy resources go through (records service by default)."""
        if self._fhir is None:
            from hdsvault.imaging.fhir import RecordsFhirWriter

            with self._lock:
                if self._fhir is None:
                    self._fhir = RecordsFhirWriter(self.platform)
        return self._fhir

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.blobs.close()

    # -- keys ---------------------------------------------------------------------------------

    def keys(self, conn: Connection, tenant: str) -> DataKeys:
        try:
            return self.platform.keyring.data_keys(conn, tenant)
        except TenantKeysMissing:
            raise ImagingError(
                Kind.NOT_FOUND, f"establishment {tenant} is unknown or shredded"
            ) from None

    def index(self, conn: Connection, tenant: str) -> BlindIndex:
        try:
            return self.platform.keyring.blind_index(conn, tenant)
        except TenantKeysMissing:
            raise ImagingError(
                Kind.NOT_FOUND, f"establishment {tenant} is unknown or shredded"
            ) from None

    # -- write path ---------------------------------------------------------------------------

    def store(self, caller: Caller, data: bytes, *, source: str) -> StoreOutcome:
        return self.store_many(caller, [data], source=source)[0]

    def store_many(
        self, caller: Caller, files: Sequence[bytes], *, source: str
    ) -> list[StoreOutcome]:
        """Store DICOM files (Part 10); one outcome per file, in order.

        Returns once every stored instance, its index rows and its journal entry are durable
        (one transaction for the whole batch): only then may the caller acknowledge.
        """
        journaling.allow(self.engine, caller, Operation.CREATE)
        tenant = caller.tenant
        head = self._head_start(tenant, files)
        try:
            return self._store(caller, files, source, head)
        finally:
            if head is not None and not head.taken:
                head.drop(self.blobs)

    def _store(
        self, caller: Caller, files: Sequence[bytes], source: str, head: _HeadStart | None
    ) -> list[StoreOutcome]:
        outcomes: list[StoreOutcome | None] = [None] * len(files)
        parsed: list[tuple[int, ParsedInstance]] = []
        for pos, data in enumerate(files):
            try:
                parsed.append((pos, parse(data)))
            except ImagingError as exc:
                outcomes[pos] = StoreOutcome(None, None, "failed", exc)
        if parsed:
            tenant = caller.tenant
            try:
                with read_connection(self.engine) as conn:
                    index = self.index(conn, tenant)
                    found = self._lookup(conn, tenant, index, parsed)
                    keys = self.current_keys(conn, tenant, found.key_version)
            except OperationalError as exc:
                raise ImagingError(Kind.UNAVAILABLE, f"database unavailable: {exc.orig}") from None
            if head is not None and head.keys is not keys:  # sealed before a key rotation
                head = None
            pending = self._new_instances(tenant, parsed, found, outcomes, head)
            if pending:
                self._prepare(tenant)
            puts = _BlobPuts(self, keys, tenant, pending, head)
            try:
                self._seal_attributes(tenant, keys, index, pending)
            except BaseException:
                puts.drop()
                raise
            puts.wait(outcomes)
            if puts.pending or any(o is not None and o.status == "duplicate" for o in outcomes):
                self._index(caller, keys, index, puts, found.known, outcomes, source)
        return [o for o in outcomes if o is not None]

    def prepare(self, tenants: Iterable[str]) -> None:
        """Create the blob fan-out of ``tenants`` now, for listeners that know whose instances
        they will receive. Why: a fresh tenant's fan-out (256 directories, each parent
        flushed) cost its first store 120 ms on the bench machine, paid by the first
        modality's association while others waited."""
        for tenant in tenants:
            self._prepare(tenant)

    def _prepare(self, tenant: str) -> None:
        """The tenant's blob fan-out, created once per process before its first put."""
        if tenant not in self._prepared:
            self.blobs.prepare(blob_prefixes(tenant))
            self._prepared.add(tenant)

    def _head_start(self, tenant: str, files: Sequence[bytes]) -> _HeadStart | None:
        """For a batch of one instance stored as a file (a C-STORE of a CT slice...), its blob
        sealed and written by a pool thread while this one parses it, looks it up and seals
        its attributes (see :class:`_HeadStart`); None for any other batch, or before the
        tenant's data keys are known to this process."""
        keys = self._keys.get(tenant)
        if len(files) != 1 or len(files[0]) <= self.inline_max or keys is None:
            return None
        iid = str(uuid.uuid4())
        key = blob_key(tenant, iid)
        self._prepare(tenant)
        data, chunk = files[0], self.chunk
        future = self.pool.submit(
            lambda: self.blobs.put(key, sealing.seal(keys, tenant, iid, data, chunk)).sha256
        )
        return _HeadStart(iid, key, keys, future)

    def _lookup(
        self,
        conn: Connection,
        tenant: str,
        index: BlindIndex,
        parsed: list[tuple[int, ParsedInstance]],
    ) -> _Found:
        """Everything a batch needs to know before writing, in one statement: the tenant's
        current data-key version, which instances are stored already, which of the studies
        and series it names exist.

        Why one statement: for a C-STORE (a batch of one) each round trip through the
        database layer was a noticeable part of the CPU spent per instance; the version is
        read here rather than by the keyring for the same reason (see :meth:`current_keys`).
        """
        tokens = {p.sop_uid: ix.uid_token(index, "instance", p.sop_uid) for _, p in parsed}
        instances = set(tokens.values())
        studies = {ix.uid_token(index, "study", p.study_uid): p.study_uid for _, p in parsed}
        series = {ix.uid_token(index, "series", p.series_uid): p.series_uid for _, p in parsed}
        m = marker(conn)

        def among(table: str, cols: str, tokens: Collection[bytes]) -> str:
            return (
                f"SELECT {cols}, NULL FROM {table} WHERE tenant_id = {m} "  # noqa: S608 (constants)
                f"AND uid_token IN ({', '.join([m] * len(tokens))})"
            )

        sql = " UNION ALL ".join(
            (
                f"SELECT 0, NULL, NULL, NULL, MAX(version) FROM tenant_keys "  # noqa: S608
                f"WHERE tenant_id = {m} AND purpose = {m}",
                among("imaging_instances", "1, uid_token, id, NULL", instances),
                among("imaging_studies", "2, uid_token, id, patient_ref", studies),
                among("imaging_series", "3, uid_token, id, study_id", series),
            )
        )
        params = (tenant, DATA, tenant, *instances, tenant, *studies, tenant, *series)
        found = _Found(None, tokens, {}, _Known({}, {}))
        for kind, token, item, ref, version in driver.execute(conn, sql, params):
            if kind == 0:
                found.key_version = None if version is None else int(version)
            elif kind == 1:
                found.instances[bytes(token)] = str(item)
            elif kind == 2:
                found.known.studies[studies[bytes(token)]] = (str(item), ref)
            else:
                found.known.series[series[bytes(token)]] = (str(item), str(ref))
        return found

    def current_keys(self, conn: Connection, tenant: str, version: int | None) -> DataKeys:
        """The tenant's data keys at the current ``version`` just read from the database.

        The keyring reads the current version at each use (so that a rotation by another
        process is seen at once); :meth:`_lookup` (a store) and a retrieval's lookup statement
        (``retrieve.find``) read it already, so the keyring is asked only when it differs from
        the keys cached here (first use, or a rotation).
        """
        if version is None:  # shredded: forget its keys here too, as the keyring does
            self._keys.pop(tenant, None)
            raise ImagingError(Kind.NOT_FOUND, f"establishment {tenant} is unknown or shredded")
        cached = self._keys.get(tenant)
        if cached is None or cached.current_version != version:
            cached = self._keys[tenant] = self.keys(conn, tenant)
        return cached

    def _new_instances(
        self,
        tenant: str,
        parsed: list[tuple[int, ParsedInstance]],
        found: _Found,
        outcomes: list[StoreOutcome | None],
        head: _HeadStart | None = None,
    ) -> list[_Pending]:
        """The instances not stored yet (a duplicate's outcome is set here), with new ids (or
        the id of the ``head`` start, whose blob is on its way)."""
        pending: list[_Pending] = []
        seen: set[bytes] = set()
        index_of = found.instances
        for pos, p in parsed:
            tok = found.tokens[p.sop_uid]
            if tok in index_of or tok in seen:
                outcomes[pos] = StoreOutcome(
                    p.sop_uid,
                    p.sop_class_uid,
                    "duplicate",
                    instance_id=index_of.get(tok),
                    study_uid=p.study_uid,
                )
                continue
            seen.add(tok)
            if head is not None:  # a batch of one, stored as a file: its blob is started
                head.taken = True
                pending.append(_Pending(pos, p, head.instance_id, head.key, tok))
                continue
            iid = str(uuid.uuid4())
            small = len(p.data) <= self.inline_max
            key = inline.inline_key(tenant, iid) if small else blob_key(tenant, iid)
            pending.append(_Pending(pos, p, iid, key, tok))
        return pending

    def _seal_attributes(
        self, tenant: str, keys: DataKeys, index: BlindIndex, pending: list[_Pending]
    ) -> None:
        """What needs no write lock, done while the blobs are being written: seal each
        instance's attributes and compute its tokens."""
        for w in pending:
            p = w.parsed
            w.meta = seal_json(
                keys, meta_context(INSTANCE_META_KIND, tenant, w.instance_id), p.header
            )
            w.tokens = frozenset(ix.instance_tokens(index, p.sop_uid, p.sop_class_uid))

    def _index(
        self,
        caller: Caller,
        keys: DataKeys,
        index: BlindIndex,
        puts: _BlobPuts,
        known: _Known,
        outcomes: list[StoreOutcome | None],
        source: str,
    ) -> None:
        attempts = 1 if is_sqlite(self.engine) else 4
        for attempt in range(attempts):
            try:
                with self.engine.begin() as conn:
                    stored = self._index_tx(
                        conn, caller, keys, index, puts.pending, known, outcomes, source
                    )
                for pos, outcome in stored.items():
                    outcomes[pos] = outcome
                return
            except IntegrityError:
                if attempt + 1 < attempts:
                    known = _Known({}, {})  # a concurrent store created the same study/series
                    continue
                puts.drop()
                raise ImagingError(
                    Kind.UNAVAILABLE, "concurrent stores of the same study collided; retry"
                ) from None
            except ImagingError:
                puts.drop()
                raise
            except OperationalError as exc:
                puts.drop()
                raise ImagingError(Kind.UNAVAILABLE, f"database unavailable: {exc.orig}") from None

    def _index_tx(
        self,
        conn: Connection,
        caller: Caller,
        keys: DataKeys,
        index: BlindIndex,
        written: list[_Pending],
        known: _Known,
        outcomes: list[StoreOutcome | None],
        source: str,
    ) -> dict[int, StoreOutcome]:
        """Index rows, tokens and journal of the instances whose blob is durable (one
        transaction, the write lock held only for this): create the studies and series not
        found by :meth:`_lookup`, insert the rest."""
        tenant = caller.tenant
        now = datetime.now(UTC)
        studies = dict(known.studies)
        series = dict(known.series)
        result: dict[int, StoreOutcome] = {}
        token_rows: list[dict[str, Any]] = []
        instance_rows: list[tuple[Any, ...]] = []
        inline_rows: list[tuple[str, bytearray]] = []
        stamp = db_time(conn, now)
        touched: list[tuple[str, str | None]] = []
        bumped: set[str] = set()
        for w in written:
            p = w.parsed
            if p.study_uid not in studies:
                studies[p.study_uid] = self._study(conn, tenant, keys, index, p, now, token_rows)
            study_id, patient_ref = studies[p.study_uid]
            if p.series_uid not in series:
                series[p.series_uid] = self._series(
                    conn, tenant, keys, index, p, study_id, now, token_rows
                )
            series_id, owner = series[p.series_uid]
            if owner != study_id:
                result[w.pos] = StoreOutcome(
                    p.sop_uid,
                    p.sop_class_uid,
                    "failed",
                    ImagingError(
                        Kind.CONFLICT,
                        "Series Instance UID already belongs to another study in this store",
                    ),
                )
                continue
            instance_rows.append(
                (
                    tenant,
                    w.instance_id,
                    study_id,
                    series_id,
                    w.uid_token,
                    p.sop_class_uid,
                    p.transfer_syntax_uid,
                    len(p.data),
                    w.key,
                    w.sha256,
                    self.chunk,
                    keys.current_version,
                    keys.current_version,
                    w.meta,
                    source[:255],
                    stamp,
                )
            )
            if w.sealed is not None:
                inline_rows.append((w.key, w.sealed))
            token_rows.extend(
                {"tenant_id": tenant, "level": "instance", "item_id": w.instance_id, "token": t}
                for t in w.tokens
            )
            bumped.add(study_id)
            touched += [
                (f"ImagingStudy/{study_id}", patient_ref),
                (f"DicomInstance/{w.instance_id}", patient_ref),
            ]
            result[w.pos] = StoreOutcome(
                p.sop_uid,
                p.sop_class_uid,
                "stored",
                instance_id=w.instance_id,
                study_id=study_id,
                study_uid=p.study_uid,
            )
        for o in outcomes:
            if o is not None and o.status == "duplicate" and o.instance_id:
                touched.append((f"DicomInstance/{o.instance_id}", None))
        m = marker(conn)
        if inline_rows:  # durable with the rows that name them: this transaction's commit
            inline.put_in(conn, inline_rows)
        if instance_rows:
            driver.execute_many(
                conn,
                f"INSERT INTO imaging_instances ({', '.join(_INSTANCE_COLUMNS)}) "  # noqa: S608
                f"VALUES ({', '.join([m] * len(_INSTANCE_COLUMNS))})",
                instance_rows,
            )
        if token_rows:
            driver.execute_many(
                conn,
                f"INSERT INTO imaging_tokens (tenant_id, level, item_id, token) "  # noqa: S608
                f"VALUES ({m}, {m}, {m}, {m})",
                [(r["tenant_id"], r["level"], r["item_id"], r["token"]) for r in token_rows],
            )
        for sid in bumped:
            driver.execute(
                conn,
                f"UPDATE imaging_studies SET revision = revision + 1, updated_at = {m} "  # noqa: S608
                f"WHERE tenant_id = {m} AND id = {m}",
                (stamp, tenant, sid),
            )
        journaling.record(conn, journaling.entries(caller, journaling.STORE, touched, when=now))
        return result

    def _study(
        self,
        conn: Connection,
        tenant: str,
        keys: DataKeys,
        index: BlindIndex,
        p: ParsedInstance,
        now: datetime,
        token_rows: list[dict[str, Any]],
    ) -> tuple[str, str | None]:
        tok = ix.uid_token(index, "study", p.study_uid)
        row = conn.execute(
            select(imaging_studies.c.id, imaging_studies.c.patient_ref).where(
                imaging_studies.c.tenant_id == tenant, imaging_studies.c.uid_token == tok
            )
        ).first()
        if row is not None:
            return str(row.id), row.patient_ref
        sid = str(uuid.uuid4())
        conn.execute(
            insert(imaging_studies).values(
                tenant_id=tenant,
                id=sid,
                uid_token=tok,
                key_version=keys.current_version,
                meta=seal_json(keys, meta_context(STUDY_KIND, tenant, sid), p.study),
                created_at=now,
                updated_at=now,
                revision=0,
                fhir_revision=0,
            )
        )
        token_rows.extend(
            {"tenant_id": tenant, "level": "study", "item_id": sid, "token": t}
            for t in ix.study_tokens(index, p.study)
        )
        return sid, None

    def _series(
        self,
        conn: Connection,
        tenant: str,
        keys: DataKeys,
        index: BlindIndex,
        p: ParsedInstance,
        study_id: str,
        now: datetime,
        token_rows: list[dict[str, Any]],
    ) -> tuple[str, str]:
        tok = ix.uid_token(index, "series", p.series_uid)
        row = conn.execute(
            select(imaging_series.c.id, imaging_series.c.study_id).where(
                imaging_series.c.tenant_id == tenant, imaging_series.c.uid_token == tok
            )
        ).first()
        if row is not None:
            return str(row.id), str(row.study_id)
        eid = str(uuid.uuid4())
        attrs = p.series
        conn.execute(
            insert(imaging_series).values(
                tenant_id=tenant,
                id=eid,
                study_id=study_id,
                uid_token=tok,
                key_version=keys.current_version,
                meta=seal_json(keys, meta_context(SERIES_KIND, tenant, eid), attrs),
                created_at=now,
            )
        )
        token_rows.extend(
            {"tenant_id": tenant, "level": "series", "item_id": eid, "token": t}
            for t in ix.series_tokens(index, attrs)
        )
        for modality in all_values(attrs, ix.T_MODALITY):
            t = ix.modality_token(index, modality)
            have = conn.execute(
                select(imaging_tokens.c.token).where(
                    imaging_tokens.c.tenant_id == tenant,
                    imaging_tokens.c.level == "study",
                    imaging_tokens.c.item_id == study_id,
                    imaging_tokens.c.token == t,
                )
            ).first()
            pending = any(
                r["item_id"] == study_id and r["token"] == t and r["level"] == "study"
                for r in token_rows
            )
            if have is None and not pending:
                token_rows.append(
                    {"tenant_id": tenant, "level": "study", "item_id": study_id, "token": t}
                )
        return eid, study_id


class _BlobPuts:
    """The sealed blobs of a batch, written in the background while the index is prepared.

    Why: an fsynced write is mostly waiting; overlapping it with the work that needs no write
    lock (:meth:`ImagingStore._seal_attributes`) takes part of its latency off the path of an
    acknowledgement. Order is kept where it matters: the index transaction starts only after
    :meth:`wait`, so a committed row always points to a durable blob, and the database's write
    lock is never held while a blob is being written (nor needed by a put of the ``database``
    backend while this thread holds it).

    A batch of one instance (every C-STORE) is written in the calling thread: there is nothing
    to overlap it with but microseconds of sealing, and the hop to a pool thread and back
    costs more (two thread wake-ups, each waiting for the GIL behind the DIMSE threads). The
    exception is an instance stored as a file once the tenant's keys are known: its blob is
    started before the batch is even parsed (:class:`_HeadStart`), and arrives here written.
    """

    def __init__(
        self,
        store: ImagingStore,
        keys: DataKeys,
        tenant: str,
        pending: list[_Pending],
        head: _HeadStart | None = None,
    ) -> None:
        self.store = store
        self.pending = pending
        if head is not None and head.taken:  # the batch's one instance, its blob on its way
            self._futures = [(pending[0], head.future)]
            return
        submit = _run_now if len(pending) == 1 else store.pool.submit
        self._futures = [(w, submit(self._put, keys, tenant, w)) for w in pending]

    def _put(self, keys: DataKeys, tenant: str, w: _Pending) -> bytes:
        """Seal ``w`` and make it durable; an inline blob is only sealed here (the index
        transaction writes it, see :mod:`hdsvault.blobs.inline`)."""
        sealed = sealing.seal(keys, tenant, w.instance_id, w.parsed.data, self.store.chunk)
        if inline.is_inline(w.key):
            w.sealed = sealed
            return hashlib.sha256(sealed).digest()
        return self.store.blobs.put(w.key, sealed).sha256

    def wait(self, outcomes: list[StoreOutcome | None]) -> None:
        """Wait for every put; a failed one fails its instance (in ``outcomes``) and leaves
        :attr:`pending`."""
        failed: set[int] = set()
        for w, future in self._futures:
            try:
                w.sha256 = future.result()
            except (BlobError, ValueError) as exc:
                failed.add(w.pos)
                outcomes[w.pos] = StoreOutcome(
                    w.parsed.sop_uid,
                    w.parsed.sop_class_uid,
                    "failed",
                    ImagingError(Kind.UNAVAILABLE, f"storage failed: {exc}"),
                )
        self.pending = [w for w in self.pending if w.pos not in failed]

    def drop(self) -> None:
        """Delete the blobs of a batch that will not be indexed (else harmless orphans);
        inline blobs have nothing to delete (their transaction did not commit)."""
        for w, future in self._futures:
            with contextlib.suppress(Exception):
                future.result()
            if inline.is_inline(w.key):
                continue
            with contextlib.suppress(BlobError):
                self.store.blobs.delete(w.key)


@dataclass
class _HeadStart:
    """The blob of a batch of one large instance, sealed and written ahead.

    Why: a C-STORE of a 525 KB CT slice spent ~2.4 ms writing its blob (sealing, writing,
    hashing, two flushes) after ~0.7 ms of parsing, lookup and sealing its attributes, one
    after the other in the calling thread; the write releases the interpreter lock, so the
    two overlap. The blob is sealed with the data keys this process holds, under an instance
    id of its own, before the batch is known to be new: it is used (``taken``) only if the
    instance is new and the keys are still the current ones, and deleted otherwise (a
    duplicate, a malformed file, a key rotation in between), as a failed batch deletes its
    blobs. The index transaction still starts only once the blob is durable (invariant 4).
    """

    instance_id: str
    key: str
    keys: DataKeys
    future: Future[bytes]
    taken: bool = False

    def drop(self, blobs: BlobStore) -> None:
        """Delete the blob (once written): nothing will refer to it."""
        with contextlib.suppress(Exception):
            self.future.result()
        with contextlib.suppress(BlobError):
            blobs.delete(self.key)


def _run_now(fn: Callable[..., bytes], *args: Any) -> Future[bytes]:
    """``fn(*args)`` run here, as a finished future (what the pool would have returned)."""
    future: Future[bytes] = Future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:  # handed to wait()/drop() like a pool thread's failure
        future.set_exception(exc)
    return future
