"""The imaging store: shared state, and the write path (STOW-RS, C-STORE).

Write path of a batch of instances (one STOW-RS request, or one C-STORE)::

    authorize -> parse headers (pixel data untouched) -> seal each file (chunked AEAD)
      -> put blobs (durable) -> BEGIN -> study/series get-or-create, instance rows,
         blind-index tokens, journal entries -> COMMIT -> acknowledge

A blob is durable before its index row commits, and the index row, its tokens and its journal
entry commit together (invariant 1). If the transaction fails the blobs just written are
deleted; a crash in between leaves an unreferenced blob, which ``verify`` reports as an
orphan, never an acknowledged instance without its data (invariant 4).

A SOP Instance UID already stored is not overwritten (first write wins, like Orthanc's
default ``OverwriteInstances: false``): the store answers success and journals the attempt.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from hdsvault.access.decision import Operation
from hdsvault.blobs import BlobError, BlobStore, open_blob_store
from hdsvault.crypto.aead import DataKeys, SealContext
from hdsvault.crypto.blind_index import BlindIndex
from hdsvault.crypto.keyring import TenantKeysMissing
from hdsvault.crypto.sealed import imaging_meta_context
from hdsvault.db.engine import is_sqlite, read_connection
from hdsvault.db.schema import imaging_instances, imaging_series, imaging_studies, imaging_tokens
from hdsvault.imaging import index as ix
from hdsvault.imaging import journaling, sealing
from hdsvault.imaging.dicomfile import Json, ParsedInstance, all_values, parse
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.platform import Platform
from hdsvault.records.model import Caller

STUDY_KIND = "imaging/study"
SERIES_KIND = "imaging/series"
INSTANCE_META_KIND = "imaging/instance-meta"


def meta_context(kind: str, tenant: str, item_id: str) -> SealContext:
    """Context of a sealed metadata column: bound to its tenant, level and row id."""
    return imaging_meta_context(kind, tenant, item_id)


def seal_json(keys: DataKeys, ctx: SealContext, value: Json) -> bytes:
    return bytes(keys.seal(json.dumps(value, separators=(",", ":")).encode(), ctx))


def open_json(keys: DataKeys, ctx: SealContext, blob: bytes) -> Json:
    data: Json = json.loads(keys.open(blob, ctx))
    return data


def blob_key(tenant: str, instance_id: str) -> str:
    return f"{tenant}/{instance_id[:2]}/{instance_id}"


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
    pos: int
    parsed: ParsedInstance
    instance_id: str
    key: str
    sha256: bytes = b""
    series_modality: list[str] = field(default_factory=list)


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
        self._fhir = fhir
        self._lock = threading.Lock()

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
        """Store DICOM files (Part 10); one outcome per file, in order."""
        journaling.allow(self.engine, caller, Operation.CREATE)
        outcomes: list[StoreOutcome | None] = [None] * len(files)
        parsed: list[tuple[int, ParsedInstance]] = []
        for pos, data in enumerate(files):
            try:
                parsed.append((pos, parse(data)))
            except ImagingError as exc:
                outcomes[pos] = StoreOutcome(None, None, "failed", exc)
        if parsed:
            tenant = caller.tenant
            with read_connection(self.engine) as conn:
                keys = self.keys(conn, tenant)
                index = self.index(conn, tenant)
                tokens = [ix.uid_token(index, "instance", p.sop_uid) for _, p in parsed]
                existing = dict(
                    conn.execute(
                        select(imaging_instances.c.uid_token, imaging_instances.c.id).where(
                            imaging_instances.c.tenant_id == tenant,
                            imaging_instances.c.uid_token.in_(tokens),
                        )
                    ).all()
                )
            pending: list[_Pending] = []
            seen: set[bytes] = set()
            for (pos, p), tok in zip(parsed, tokens, strict=True):
                if tok in existing or tok in seen:
                    outcomes[pos] = StoreOutcome(
                        p.sop_uid,
                        p.sop_class_uid,
                        "duplicate",
                        instance_id=existing.get(tok),
                        study_uid=p.study_uid,
                    )
                    continue
                seen.add(tok)
                iid = str(uuid.uuid4())
                pending.append(_Pending(pos, p, iid, blob_key(tenant, iid)))
            self._put_blobs(keys, tenant, pending, outcomes)
            written = [w for w in pending if outcomes[w.pos] is None]
            if written or any(o is not None and o.status == "duplicate" for o in outcomes):
                self._index(caller, keys, index, written, outcomes, source)
        return [o for o in outcomes if o is not None]

    def _put_blobs(
        self,
        keys: DataKeys,
        tenant: str,
        pending: list[_Pending],
        outcomes: list[StoreOutcome | None],
    ) -> None:
        for w in pending:
            p = w.parsed
            try:
                sealed = sealing.seal(keys, tenant, w.instance_id, p.data, self.chunk)
                w.sha256 = self.blobs.put(w.key, sealed).sha256
            except (BlobError, ValueError) as exc:
                outcomes[w.pos] = StoreOutcome(
                    p.sop_uid,
                    p.sop_class_uid,
                    "failed",
                    ImagingError(Kind.UNAVAILABLE, f"storage failed: {exc}"),
                )

    def _index(
        self,
        caller: Caller,
        keys: DataKeys,
        index: BlindIndex,
        written: list[_Pending],
        outcomes: list[StoreOutcome | None],
        source: str,
    ) -> None:
        attempts = 1 if is_sqlite(self.engine) else 4
        for attempt in range(attempts):
            try:
                with self.engine.begin() as conn:
                    stored = self._index_tx(conn, caller, keys, index, written, outcomes, source)
                for pos, outcome in stored.items():
                    outcomes[pos] = outcome
                return
            except IntegrityError:
                if attempt + 1 < attempts:
                    continue  # a concurrent store created the same study/series: retry
                self._drop_blobs(written)
                raise ImagingError(
                    Kind.UNAVAILABLE, "concurrent stores of the same study collided; retry"
                ) from None
            except ImagingError:
                self._drop_blobs(written)
                raise
            except OperationalError as exc:
                self._drop_blobs(written)
                raise ImagingError(Kind.UNAVAILABLE, f"database unavailable: {exc.orig}") from None

    def _drop_blobs(self, written: list[_Pending]) -> None:
        for w in written:
            with contextlib.suppress(BlobError):  # else an orphan, which verify reports
                self.blobs.delete(w.key)

    def _index_tx(
        self,
        conn: Connection,
        caller: Caller,
        keys: DataKeys,
        index: BlindIndex,
        written: list[_Pending],
        outcomes: list[StoreOutcome | None],
        source: str,
    ) -> dict[int, StoreOutcome]:
        tenant = caller.tenant
        now = datetime.now(UTC)
        studies: dict[str, tuple[str, str | None]] = {}  # study uid -> (id, patient_ref)
        series: dict[str, tuple[str, str]] = {}  # series uid -> (id, study id)
        result: dict[int, StoreOutcome] = {}
        token_rows: list[dict[str, Any]] = []
        instance_rows: list[dict[str, Any]] = []
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
                {
                    "tenant_id": tenant,
                    "id": w.instance_id,
                    "study_id": study_id,
                    "series_id": series_id,
                    "uid_token": ix.uid_token(index, "instance", p.sop_uid),
                    "sop_class_uid": p.sop_class_uid,
                    "transfer_syntax_uid": p.transfer_syntax_uid,
                    "size": len(p.data),
                    "blob_key": w.key,
                    "blob_sha256": w.sha256,
                    "chunk_bytes": self.chunk,
                    "key_version": keys.current_version,
                    "meta": seal_json(
                        keys, meta_context(INSTANCE_META_KIND, tenant, w.instance_id), p.header
                    ),
                    "source": source[:255],
                    "created_at": now,
                }
            )
            token_rows.extend(
                {"tenant_id": tenant, "level": "instance", "item_id": w.instance_id, "token": t}
                for t in ix.instance_tokens(index, p.sop_uid, p.sop_class_uid)
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
        if instance_rows:
            conn.execute(insert(imaging_instances), instance_rows)
        if token_rows:
            conn.execute(insert(imaging_tokens), token_rows)
        for sid in bumped:
            conn.execute(
                update(imaging_studies)
                .where(imaging_studies.c.tenant_id == tenant, imaging_studies.c.id == sid)
                .values(revision=imaging_studies.c.revision + 1, updated_at=now)
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
