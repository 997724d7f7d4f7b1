"""Re-encrypt instance blobs under the tenant's current data key (part of ``keys rewrap``).

A blob is never rewritten in place. For each instance whose blob is on an older key version:

1. the old blob is opened and resealed, segment by segment (memory: one AEAD segment), into a
   new blob ``<tenant>/<ab>/<instance id>.k<version>``, written durably;
2. one transaction switches the instance row to it (``blob_key``, ``blob_sha256``,
   ``blob_key_version``), guarded by the old key, so a concurrent change is never overwritten;
3. only then is the old blob deleted.

A crash before 2 leaves the old blob referenced and intact (the new one, under a name derived
from the instance and version, is overwritten by the next run); a crash between 2 and 3 leaves
the old blob unreferenced (an orphan: harmless, no row depends on it). Running the
rewrap again continues where it stopped. Rows stored before the key version of blobs was
recorded (``blob_key_version`` NULL) are settled from the blob's own header.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import ColumnElement, Connection, func, or_, select, update

from hdsvault.blobs import BlobError, BlobStore, inline
from hdsvault.crypto.aead import DataKeys
from hdsvault.crypto.errors import DecryptionError
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import imaging_instances
from hdsvault.imaging import sealing
from hdsvault.platform import Platform

BATCH = 200
log = structlog.get_logger("hdsvault.imaging")
_it = imaging_instances.c


@dataclass(frozen=True)
class _Blob:
    """An instance row as the rewrap needs it."""

    id: str
    key: str
    version: int | None
    size: int
    chunk: int


def _old(tenant: str, current: int) -> ColumnElement[bool]:
    return (_it.tenant_id == tenant) & or_(
        _it.blob_key_version.is_(None), _it.blob_key_version < current
    )


def count_old_blobs(conn: Connection, tenant: str, current: int) -> int:
    """Instance blobs of ``tenant`` not known to be on data-key version ``current``."""
    stmt = select(func.count()).select_from(imaging_instances).where(_old(tenant, current))
    return int(conn.execute(stmt).scalar_one())


def rewrapped_key(tenant: str, instance_id: str, version: int, old_key: str) -> str:
    """Where the blob resealed under ``version`` goes: an inline blob stays inline (in the
    index database, :mod:`hdsvault.blobs.inline`), the others go to the backend."""
    if inline.is_inline(old_key):
        return inline.inline_key(tenant, f"{instance_id}.k{version}")
    return f"{tenant}/{instance_id[:2]}/{instance_id}.k{version}"


def rewrap_blobs(
    platform: Platform,
    tenant: str,
    blobs: BlobStore,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Move every instance blob of ``tenant`` to the current data key; returns how many moved.

    A blob that cannot be read or opened (missing, corrupt) is left as it is, logged, and
    still counted by :func:`count_old_blobs`; ``verify`` (blob hashes) names what is wrong.
    """
    moved = 0
    after = ""
    while True:
        with read_connection(platform.engine) as conn:
            keys = platform.keyring.data_keys(conn, tenant)
            rows = [
                _Blob(*r)
                for r in conn.execute(
                    select(_it.id, _it.blob_key, _it.blob_key_version, _it.size, _it.chunk_bytes)
                    .where(_old(tenant, keys.current_version), _it.id > after)
                    .order_by(_it.id)
                    .limit(BATCH)
                )
            ]
        for row in rows:
            try:
                moved += _rewrap_one(platform, tenant, blobs, keys, row)
            except (BlobError, DecryptionError) as exc:
                log.warning("rewrap.blob-skipped", instance=row.id, error=str(exc)[:200])
            if progress:
                progress(moved)
        if len(rows) < BATCH:
            return moved
        after = rows[-1].id


def _rewrap_one(
    platform: Platform, tenant: str, blobs: BlobStore, keys: DataKeys, row: _Blob
) -> int:
    """Reseal one instance's blob under a new key, switch the row to it, drop the old one."""
    iid, old_key = row.id, row.key
    current = keys.current_version
    guard = (_it.tenant_id == tenant) & (_it.id == iid) & (_it.blob_key == old_key)
    if row.version is None and sealing.key_version(blobs.open(old_key)) == current:
        with platform.engine.begin() as conn:
            conn.execute(update(imaging_instances).where(guard).values(blob_key_version=current))
        return 0
    new_key = rewrapped_key(tenant, iid, current, old_key)
    plain = sealing.open_stream(keys, tenant, iid, blobs.open(old_key))
    info = blobs.put(new_key, sealing.seal_stream(keys, tenant, iid, plain, row.size, row.chunk))
    with platform.engine.begin() as conn:
        switched = conn.execute(
            update(imaging_instances)
            .where(guard)
            .values(blob_key=new_key, blob_sha256=info.sha256, blob_key_version=current)
        ).rowcount
    if not switched:  # the row changed meanwhile: the new blob is not referenced
        with contextlib.suppress(BlobError):
            blobs.delete(new_key)
        return 0
    with contextlib.suppress(BlobError):  # else an orphan: harmless, nothing refers to it
        blobs.delete(old_key)
    return 1
