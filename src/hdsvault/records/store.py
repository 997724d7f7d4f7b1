"""The record store's handle on the platform: engine, per-tenant keys, options.

One per process (the REST face builds it at start, the CLI per command). It caches what is
expensive and safe to share: the memoised blind-index function of each tenant. Data keys are
asked of the keyring at each unit of work (it caches the unwrapped keys and reads the current
version, so a rotation by another process is seen at once).
"""

from __future__ import annotations

import threading

from sqlalchemy import Connection, Engine

from hdsvault.config import FhirSettings
from hdsvault.crypto.aead import DataKeys
from hdsvault.crypto.keyring import TenantKeysMissing
from hdsvault.db.engine import read_connection
from hdsvault.platform import Platform
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.indexing import MemoTokens


class RecordStore:
    """Shared state of the record services (thread-safe)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.engine: Engine = platform.engine
        self.options: FhirSettings = platform.settings.fhir
        self.base_urls: tuple[str, ...] = tuple(self.options.base_urls)
        self._tokens: dict[str, MemoTokens] = {}
        self._lock = threading.Lock()

    def data_keys(self, conn: Connection, tenant: str) -> DataKeys:
        try:
            return self.platform.keyring.data_keys(conn, tenant)
        except TenantKeysMissing:
            raise RecordError(
                Problem.NOT_FOUND, f"establishment {tenant} is unknown or shredded"
            ) from None

    def tokens(self, conn: Connection, tenant: str) -> MemoTokens:
        found = self._tokens.get(tenant)
        if found is None:
            try:
                index = self.platform.keyring.blind_index(conn, tenant)
            except TenantKeysMissing:
                raise RecordError(
                    Problem.NOT_FOUND, f"establishment {tenant} is unknown or shredded"
                ) from None
            with self._lock:
                found = self._tokens.setdefault(tenant, MemoTokens(index))
        return found

    def tokens_for(self, tenant: str) -> MemoTokens:
        """:meth:`tokens` outside any unit of work (indexing before the write lock)."""
        found = self._tokens.get(tenant)
        if found is not None:
            return found
        with read_connection(self.engine) as conn:
            return self.tokens(conn, tenant)

    def forget_tenant(self, tenant: str) -> None:
        """Drop cached tokens of a tenant (after a shred)."""
        with self._lock:
            self._tokens.pop(tenant, None)
