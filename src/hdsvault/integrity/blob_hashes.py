"""Recompute the SHA-256 of every stored blob and compare it with the one recorded at ingest.

The hash is of the stored (sealed) bytes, so the check needs no key: a storage operator can
run it. A blob missing from the store, or of another size, is named by its key and its row.

Blobs no row refers to (orphans: a crash between a blob's write and its row's commit, or the
old blob of a rewrap interrupted before its delete) are counted and named in the note, not
reported as findings: they hold ciphertext nobody reads, and an ingest in progress has some.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from sqlalchemy import Connection, func, select

from hdsvault.blobs import BlobError, BlobNotFound, open_blob_store
from hdsvault.blobs.base import sha256_of
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import bulk_exports, imaging_instances
from hdsvault.integrity.report import ComponentReport, Finding
from hdsvault.platform import Platform

Progress = Callable[[int, int], None]


def check_blobs(platform: Platform, progress: Progress | None = None) -> ComponentReport:
    report = ComponentReport("blobs (SHA-256)")
    store = open_blob_store(platform.settings, platform.engine)
    i = imaging_instances.c
    try:
        with read_connection(platform.engine) as conn:
            total = int(
                conn.execute(select(func.count()).select_from(imaging_instances)).scalar_one()
            )
            rows = conn.execute(
                select(i.tenant_id, i.id, i.blob_key, i.blob_sha256)
                .order_by(i.tenant_id, i.id)
                .execution_options(yield_per=500)
            )
            referenced: set[str] = set()
            for n, (tenant, item, key, expected) in enumerate(rows, 1):
                referenced.add(key)
                where = f"imaging instance {tenant}/{item} (blob {key})"
                try:
                    _, digest = sha256_of(store.open(key))
                except BlobNotFound:
                    report.findings.append(Finding(where, "missing from the blob store"))
                except BlobError as exc:
                    report.findings.append(Finding(where, f"unreadable: {exc}"))
                else:
                    if digest != bytes(expected):
                        report.findings.append(Finding(where, "content differs from its SHA-256"))
                report.checked += 1
                if progress:
                    progress(n, total)
            referenced |= _export_parts(conn)
        orphans = sorted(k for k in store.iter_keys() if k not in referenced)
    finally:
        store.close()
    if orphans:
        shown = ", ".join(orphans[:3]) + (", ..." if len(orphans) > 3 else "")
        report.note = f"{len(orphans)} unreferenced blobs (orphans, not errors): {shown}"
    return report


def _export_parts(conn: Connection) -> set[str]:
    """Blob keys of the sealed parts of bulk ``$export`` jobs."""
    return {
        part["blob_key"]
        for (parts,) in conn.execute(select(bulk_exports.c.parts))
        for part in orjson.loads(parts)
    }
