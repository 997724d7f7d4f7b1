"""Key administration for one tenant: rotate, and rewrap everything to the newest version.

"Everything" is the sealed columns of the database (``crypto.sealed.SEALED_COLUMNS``) and the
instance blobs of the blob store (``imaging.rewrap``): the report counts both, so that "0 left
on older versions" really means the older versions protect nothing any more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, func, select, update

from hdsvault.blobs import open_blob_store
from hdsvault.crypto.sealed import SEALED_COLUMNS, SealedColumn
from hdsvault.db.engine import read_connection
from hdsvault.imaging.rewrap import count_old_blobs, rewrap_blobs
from hdsvault.journal.service import admin_entry, record
from hdsvault.platform import Platform

BATCH = 500


@dataclass(frozen=True)
class RewrapReport:
    tenant: str
    target_version: int
    rewrapped: int  # ciphertexts moved to target_version: sealed columns and blobs
    remaining_on_old_versions: int
    blobs_rewrapped: int = 0  # of which instance blobs


def rotate_keys(platform: Platform, tenant: str, *, by: str) -> int:
    """Create a new data-key version for ``tenant``; returns it."""
    with platform.engine.begin() as conn:
        version = platform.keyring.rotate(conn, tenant)
        record(conn, admin_entry("keys.rotate", by, log_id=tenant, objects=(f"DataKey/{version}",)))
    return version


def count_on_old_versions(platform: Platform, tenant: str) -> int:
    with read_connection(platform.engine) as conn:
        current = platform.keyring.data_keys(conn, tenant).current_version
        columns = sum(_old_count(conn, col, tenant, current) for col in SEALED_COLUMNS)
        return columns + count_old_blobs(conn, tenant, current)


def _old_count(conn, col: SealedColumn, tenant: str, current: int) -> int:  # type: ignore[no-untyped-def]
    stmt = select(func.count()).where(
        col.tenant == tenant, col.key_version < current, col.body.is_not(None)
    )
    return int(conn.execute(stmt).scalar_one())


def rewrap(
    platform: Platform,
    tenant: str,
    *,
    by: str,
    progress: Callable[[int, int], None] | None = None,
) -> RewrapReport:
    """Re-encrypt every ciphertext of ``tenant`` under its newest data key, blobs included.

    Works in batches, each its own transaction, so a long rewrap neither holds a lock for long
    nor loses work if interrupted: run again and it continues where it stopped. Each row update
    is guarded by its old key version, so a concurrent writer is never overwritten.
    """
    total = count_on_old_versions(platform, tenant)
    done = 0
    if progress:
        progress(done, total)
    for col in SEALED_COLUMNS:
        pk = list(col.table.primary_key.columns)
        while True:
            with platform.engine.begin() as conn:
                keys = platform.keyring.data_keys(conn, tenant)
                rows = conn.execute(
                    select(col.table)
                    .where(
                        col.tenant == tenant,
                        col.key_version < keys.current_version,
                        col.body.is_not(None),
                    )
                    .order_by(*pk)
                    .limit(BATCH)
                ).all()
                for row in rows:
                    ctx = col.context(row)
                    sealed = keys.seal(keys.open(getattr(row, col.body.name), ctx), ctx)
                    conn.execute(
                        update(col.table)
                        .where(and_(*(c == getattr(row, c.name) for c in pk)))
                        .where(col.key_version == getattr(row, col.key_version.name))
                        .values({col.body.name: sealed, col.key_version.name: keys.current_version})
                    )
            done += len(rows)
            if progress:
                progress(done, total)
            if len(rows) < BATCH:
                break
    blobs = open_blob_store(platform.settings, platform.engine)
    try:
        moved = rewrap_blobs(
            platform,
            tenant,
            blobs,
            progress=(lambda n: progress(done + n, total)) if progress else None,
        )
    finally:
        blobs.close()
    with platform.engine.begin() as conn:
        current = platform.keyring.data_keys(conn, tenant).current_version
        record(conn, admin_entry("keys.rewrap", by, log_id=tenant, objects=(f"DataKey/{current}",)))
    remaining = count_on_old_versions(platform, tenant)
    return RewrapReport(tenant, current, done + moved, remaining, blobs_rewrapped=moved)
