"""The keyring: per-tenant keys, stored only wrapped by the KEK.

Each tenant (establishment) has versioned *data keys* (AES-256, for the envelope AEAD) and one
*index root key* (for blind indexes). Their wrapped form lives in ``tenant_keys``; the clear keys
exist only in memory. Rotation adds a data-key version; shredding deletes every wrapped key of a
tenant, which makes its ciphertexts unreadable for good.

The current data-key version is read from the database at each use (one indexed query), so a
rotation done by another process (the CLI) is seen at once by every server worker: no process
keeps sealing with a key that a rewrap has just retired.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, func, insert, select

from hdsvault.crypto.aead import DataKeys
from hdsvault.crypto.blind_index import BlindIndex
from hdsvault.crypto.errors import KekError
from hdsvault.crypto.kek import KeyEncryptionKey
from hdsvault.db.schema import platform_keys, tenant_keys

DATA = "data"
INDEX = "index"
KEY_BYTES = 32


class TenantKeysMissing(KekError):
    """The tenant has no keys (unknown tenant, or shredded)."""


def _wrap_context(tenant: str, purpose: str, version: int) -> bytes:
    return b"\x00".join(
        (b"hdsvault/tenant-key/v1", tenant.encode(), purpose.encode(), b"%d" % version)
    )


def _platform_context(purpose: str, version: int) -> bytes:
    return b"\x00".join((b"hdsvault/platform-key/v1", purpose.encode(), b"%d" % version))


class Keyring:
    """Unwraps, caches and manages the per-tenant keys."""

    def __init__(self, engine: Engine, kek: KeyEncryptionKey) -> None:
        self._engine = engine
        self._kek = kek
        self._lock = threading.Lock()
        self._data: dict[str, DataKeys] = {}
        self._index: dict[str, BlindIndex] = {}
        self._platform: dict[str, bytes] = {}

    @property
    def kek_id(self) -> str:
        return self._kek.kek_id

    # -- creation, rotation, shredding (called inside the caller's transaction) ----------------

    def create_tenant_keys(self, conn: Connection, tenant: str) -> None:
        """Generate the first data key and the index root key of a new tenant."""
        self._store_new_key(conn, tenant, DATA, 1)
        self._store_new_key(conn, tenant, INDEX, 1)

    def rotate(self, conn: Connection, tenant: str) -> int:
        """Add a new data-key version; new seals use it, older versions stay readable."""
        current = self._current_version(conn, tenant)
        if current is None:
            raise TenantKeysMissing(f"tenant {tenant} has no keys")
        self._store_new_key(conn, tenant, DATA, current + 1)
        return current + 1

    def shred(self, conn: Connection, tenant: str) -> int:
        """Delete every wrapped key of ``tenant``; returns how many were destroyed."""
        result = conn.execute(delete(tenant_keys).where(tenant_keys.c.tenant_id == tenant))
        with self._lock:
            self._data.pop(tenant, None)
            self._index.pop(tenant, None)
        return result.rowcount

    def _store_new_key(self, conn: Connection, tenant: str, purpose: str, version: int) -> None:
        key = os.urandom(KEY_BYTES)
        conn.execute(
            insert(tenant_keys).values(
                tenant_id=tenant,
                purpose=purpose,
                version=version,
                kek_id=self._kek.kek_id,
                wrapped=self._kek.wrap(key, _wrap_context(tenant, purpose, version)),
                created_at=datetime.now(UTC),
            )
        )

    # -- use ------------------------------------------------------------------------------------

    def data_keys(self, conn: Connection, tenant: str) -> DataKeys:
        """The tenant's data keys, current version as stored now."""
        current = self._current_version(conn, tenant)
        if current is None:
            raise TenantKeysMissing(f"tenant {tenant} has no keys (unknown or shredded)")
        with self._lock:
            cached = self._data.get(tenant)
        if cached is None or cached.current_version != current:
            # Built once per (tenant, current version): DataKeys keeps its AES key schedules.
            cached = DataKeys(self._unwrap_all(conn, tenant, DATA), current)
            with self._lock:
                self._data[tenant] = cached
        return cached

    def blind_index(self, conn: Connection, tenant: str) -> BlindIndex:
        """The tenant's blind-index function (HMAC under an HKDF-derived key)."""
        with self._lock:
            cached = self._index.get(tenant)
        if cached is not None:
            return cached
        keys = self._unwrap_all(conn, tenant, INDEX)
        if not keys:
            raise TenantKeysMissing(f"tenant {tenant} has no index key (unknown or shredded)")
        index = BlindIndex(keys[max(keys)], tenant)
        with self._lock:
            self._index[tenant] = index
        return index

    def _current_version(self, conn: Connection, tenant: str) -> int | None:
        stmt = select(func.max(tenant_keys.c.version)).where(
            tenant_keys.c.tenant_id == tenant, tenant_keys.c.purpose == DATA
        )
        value = conn.execute(stmt).scalar_one_or_none()
        return int(value) if value is not None else None

    def _unwrap_all(self, conn: Connection, tenant: str, purpose: str) -> dict[int, bytes]:
        rows = conn.execute(
            select(tenant_keys.c.version, tenant_keys.c.kek_id, tenant_keys.c.wrapped).where(
                tenant_keys.c.tenant_id == tenant, tenant_keys.c.purpose == purpose
            )
        ).all()
        keys: dict[int, bytes] = {}
        for version, kek_id, wrapped in rows:
            if kek_id != self._kek.kek_id:
                raise KekError(
                    f"tenant {tenant} key v{version} was wrapped by KEK {kek_id}, "
                    f"but the configured KEK is {self._kek.kek_id}: wrong key file or HSM key"
                )
            keys[version] = self._kek.unwrap(wrapped, _wrap_context(tenant, purpose, version))
        return keys

    # -- platform secrets (journal signing and MAC keys) ------------------------------------------

    def ensure_platform_secret(self, conn: Connection, purpose: str) -> bool:
        """Create the platform secret ``purpose`` (32 random bytes) if absent; True if created."""
        exists = conn.execute(
            select(platform_keys.c.version).where(platform_keys.c.purpose == purpose).limit(1)
        ).first()
        if exists is not None:
            return False
        conn.execute(
            insert(platform_keys).values(
                purpose=purpose,
                version=1,
                kek_id=self._kek.kek_id,
                wrapped=self._kek.wrap(os.urandom(KEY_BYTES), _platform_context(purpose, 1)),
                created_at=datetime.now(UTC),
            )
        )
        return True

    def platform_secret(self, conn: Connection, purpose: str) -> bytes:
        """The newest platform secret ``purpose``, unwrapped (cached per process)."""
        with self._lock:
            cached = self._platform.get(purpose)
        if cached is not None:
            return cached
        row = conn.execute(
            select(platform_keys.c.version, platform_keys.c.kek_id, platform_keys.c.wrapped)
            .where(platform_keys.c.purpose == purpose)
            .order_by(platform_keys.c.version.desc())
            .limit(1)
        ).first()
        if row is None:
            raise KekError(f"platform key {purpose!r} is missing: run `hdsvault init`")
        if row.kek_id != self._kek.kek_id:
            raise KekError(
                f"platform key {purpose!r} was wrapped by KEK {row.kek_id}, not {self._kek.kek_id}"
            )
        secret = self._kek.unwrap(row.wrapped, _platform_context(purpose, row.version))
        with self._lock:
            self._platform[purpose] = secret
        return secret

    def check(self, conn: Connection) -> None:
        """Prove the KEK opens the stored keys (readiness): unwrap one wrapped key, if any."""
        row = conn.execute(
            select(
                tenant_keys.c.tenant_id,
                tenant_keys.c.purpose,
                tenant_keys.c.version,
                tenant_keys.c.kek_id,
                tenant_keys.c.wrapped,
            ).limit(1)
        ).first()
        if row is None:
            return
        if row.kek_id != self._kek.kek_id:
            raise KekError(f"stored keys were wrapped by KEK {row.kek_id}, not {self._kek.kek_id}")
        self._kek.unwrap(row.wrapped, _wrap_context(row.tenant_id, row.purpose, row.version))
