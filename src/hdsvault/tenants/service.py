"""Tenant administration: add, list, show, shred. Each call is one transaction."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select, update

from hdsvault.db.engine import read_connection
from hdsvault.db.schema import resource_versions, tenant_keys, tenants
from hdsvault.journal.entry import Action, Severity
from hdsvault.journal.service import admin_entry, record
from hdsvault.platform import Platform
from hdsvault.tenants.finess import validate_finess


class TenantError(Exception):
    """A tenant operation that cannot be done (unknown tenant, duplicate, already shredded)."""


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: datetime
    shredded_at: datetime | None
    data_key_versions: int = 0
    stored_versions: int = 0


@dataclass(frozen=True)
class ShredCertificate:
    """What was destroyed, when and by whom: the proof handed to the establishment."""

    tenant: str
    tenant_name: str
    keys_destroyed: int
    ciphertexts_left_unreadable: int
    kek_id: str
    shredded_at: str
    shredded_by: str
    path: Path

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("path")
        return json.dumps({"type": "hdsvault-shred-certificate", "version": 1, **data}, indent=2)


def add_tenant(platform: Platform, finess: str, name: str, *, by: str) -> Tenant:
    """Register an establishment and create its keys, atomically."""
    tenant_id = validate_finess(finess)
    if not name.strip():
        raise TenantError("a tenant needs a name")
    now = datetime.now(UTC)
    with platform.engine.begin() as conn:
        if conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id)).first():
            raise TenantError(f"tenant {tenant_id} already exists")
        conn.execute(insert(tenants).values(id=tenant_id, name=name.strip(), created_at=now))
        platform.keyring.create_tenant_keys(conn, tenant_id)
        record(
            conn,
            admin_entry(
                "tenant.create", by, action=Action.CREATE, objects=(f"Organization/{tenant_id}",)
            ),
        )
    return get_tenant(platform, tenant_id)


def list_tenants(platform: Platform) -> list[Tenant]:
    with read_connection(platform.engine) as conn:
        ids = conn.execute(select(tenants.c.id).order_by(tenants.c.id)).scalars().all()
    return [get_tenant(platform, t) for t in ids]


def get_tenant(platform: Platform, tenant_id: str) -> Tenant:
    with read_connection(platform.engine) as conn:
        row = conn.execute(select(tenants).where(tenants.c.id == tenant_id)).first()
        if row is None:
            raise TenantError(f"no tenant {tenant_id}")
        versions = conn.execute(
            select(func.count()).where(
                tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.purpose == "data"
            )
        ).scalar_one()
        stored = conn.execute(
            select(func.count()).where(resource_versions.c.tenant_id == tenant_id)
        ).scalar_one()
    return Tenant(row.id, row.name, row.created_at, row.shredded_at, versions, stored)


def shred_tenant(platform: Platform, tenant_id: str, *, by: str) -> ShredCertificate:
    """Destroy every key of a tenant: its ciphertexts become unreadable forever.

    The certificate is written next to the data (``certificates/``) with mode 0600.
    """
    tenant = get_tenant(platform, tenant_id)
    if tenant.shredded_at is not None:
        raise TenantError(f"tenant {tenant_id} was already shredded on {tenant.shredded_at}")
    now = datetime.now(UTC)
    with platform.engine.begin() as conn:
        destroyed = platform.keyring.shred(conn, tenant_id)
        conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(shredded_at=now))
        record(
            conn,
            admin_entry(
                "tenant.shred",
                by,
                action=Action.DELETE,
                objects=(f"Organization/{tenant_id}",),
                severity=Severity.ALERT,
            ),
        )
    platform.vacuum_keys()
    directory = platform.settings.certificates_dir
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"shred-{tenant_id}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    cert = ShredCertificate(
        tenant=tenant_id,
        tenant_name=tenant.name,
        keys_destroyed=destroyed,
        ciphertexts_left_unreadable=tenant.stored_versions,
        kek_id=platform.keyring.kek_id,
        shredded_at=now.isoformat(),
        shredded_by=by,
        path=path,
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(cert.to_json() + "\n")
    return cert
