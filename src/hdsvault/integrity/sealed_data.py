"""Open every sealed column value: each AES-GCM tag is checked against its context.

The context binds tenant, kind, item id and version, so an edited ciphertext, one moved to
another row, or a row whose key-version column was changed all fail to open. Clear bytes are
dropped as soon as they are produced. A shredded tenant's data is unreadable by design: its
rows are counted as skipped, not as findings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, Row, func, select

from hdsvault.crypto.aead import DataKeys
from hdsvault.crypto.errors import CryptoError
from hdsvault.crypto.sealed import SEALED_COLUMNS, SealedColumn
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import tenants
from hdsvault.integrity.report import ComponentReport, Finding
from hdsvault.platform import Platform

BATCH = 1000
Progress = Callable[[int, int], None]


def check_sealed(platform: Platform, progress: Progress | None = None) -> ComponentReport:
    report = ComponentReport("sealed data (AEAD tags)")
    with read_connection(platform.engine) as conn:
        shredded = {
            t
            for (t,) in conn.execute(select(tenants.c.id).where(tenants.c.shredded_at.is_not(None)))
        }
        total = sum(_count(conn, col) for col in SEALED_COLUMNS)
        keys: dict[str, DataKeys] = {}
        done = 0
        for col in SEALED_COLUMNS:
            for row in _rows(conn, col):
                done += 1
                tenant = getattr(row, col.tenant.name)
                if tenant in shredded:
                    report.skipped += 1
                    continue
                if tenant not in keys:
                    keys[tenant] = platform.keyring.data_keys(conn, tenant)
                try:
                    keys[tenant].open(getattr(row, col.body.name), col.context(row))
                except CryptoError as exc:
                    report.findings.append(Finding(_where(col, row), f"does not open: {exc}"))
                report.checked += 1
                if progress and done % BATCH == 0:
                    progress(done, total)
    if progress:
        progress(total, total)
    if report.skipped:
        report.note = f"{report.skipped} values of shredded tenants skipped (unreadable by design)"
    return report


def _count(conn: Connection, col: SealedColumn) -> int:
    stmt = select(func.count()).select_from(col.table).where(col.body.is_not(None))
    return int(conn.execute(stmt).scalar_one())


def _rows(conn: Connection, col: SealedColumn) -> Iterator[Row[Any]]:
    pk = list(col.table.primary_key.columns)
    stmt = (
        select(col.table)
        .where(col.body.is_not(None))
        .order_by(*pk)
        .execution_options(yield_per=BATCH)
    )
    yield from conn.execute(stmt)


def _where(col: SealedColumn, row: object) -> str:
    key = "/".join(str(getattr(row, c.name)) for c in col.table.primary_key.columns)
    return f"{col.name} {key}"
