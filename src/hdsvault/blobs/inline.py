"""Small blobs kept in the index database, written in the caller's own transaction.

Why: a small DICOM instance (a C-STORE of 39 KB) paid three ordered flushes before it could
be acknowledged: the blob file, its directory, then the index transaction (WAL commit). The
blob had to be durable before the row naming it committed, so the flushes could not be
merged. Written as a ``blob_chunks`` row by the same transaction as its index row and journal
entry, the blob becomes durable with them in the one commit: one flush per instance, and a
committed row can never name a blob that is not durable (they are the same commit). A crash
before the commit leaves nothing (not even an orphan); after it, both.

Keys of such blobs are ``<tenant>/inline/<id>`` (the second segment tells them apart from the
backend's ``<tenant>/<ab>/<id>`` and ``<tenant>/bulk-export/...``; :func:`is_inline`). They
stay ordinary blob-store keys: :class:`InlineRouting` sends every operation on such a key to
the ``blob_chunks`` table (:class:`~hdsvault.blobs.database.DatabaseBlobStore`) and the rest
to the configured backend, so readers, ``verify``, ``keys rewrap`` and the orphan listing see
one store. The rows are sealed bytes like any blob (invariant 3), their SHA-256 is recorded
like any blob's (invariant 5), and they are backed up and replicated with the database.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence

from sqlalchemy import Connection, Engine

from hdsvault.blobs.base import BlobInfo, BlobStore, Payload, check_key
from hdsvault.blobs.database import ROW_BYTES, DatabaseBlobStore
from hdsvault.db import driver
from hdsvault.db.engine import marker

SEGMENT = "inline"
"""Second segment of an inline key."""


def inline_key(tenant: str, item_id: str) -> str:
    """The key of an inline blob of ``tenant``."""
    return check_key(f"{tenant}/{SEGMENT}/{item_id}")


def is_inline(key: str) -> bool:
    """Whether ``key`` names a blob kept in the ``blob_chunks`` table."""
    parts = key.split("/", 2)
    return len(parts) == 3 and parts[1] == SEGMENT


def put_in(conn: Connection, blobs: Sequence[tuple[str, bytes | bytearray]]) -> None:
    """Write each ``(key, sealed bytes)`` of new inline blobs within ``conn``'s open
    transaction: durable when, and only when, that transaction commits.

    One row per blob (at most ROW_BYTES each: small blobs only). A key that exists already
    fails the transaction (primary key): keys are fresh random ids, never reused. The caller
    has the SHA-256 of the bytes already (computed while sealing, outside the write lock).
    """
    for key, data in blobs:
        if not is_inline(check_key(key)) or len(data) > ROW_BYTES:
            raise ValueError(f"{key[:80]!r} is not an inline key of at most {ROW_BYTES} bytes")
    m = marker(conn)
    driver.execute_many(
        conn,
        f"INSERT INTO blob_chunks (blob_key, seq, data) VALUES ({m}, 0, {m})",  # noqa: S608
        blobs,
    )


def get(engine: Engine, key: str) -> bytes:
    """One inline blob, by its own statement (:class:`BlobNotFound` if there is none)."""
    return DatabaseBlobStore(engine).get(key)


def fetch(conn: Connection, keys: Collection[str]) -> dict[str, bytes]:
    """The inline blobs of ``keys``, read in one statement on ``conn`` (a retrieval of a study
    of small instances would otherwise pay one query per instance). Missing keys are absent."""
    if not keys:
        return {}
    m = marker(conn)
    rows = conn.exec_driver_sql(
        "SELECT blob_key, seq, data FROM blob_chunks "  # noqa: S608 (markers only)
        f"WHERE blob_key IN ({', '.join([m] * len(keys))}) ORDER BY blob_key, seq",
        tuple(keys),
    ).all()
    parts: dict[str, list[bytes]] = {}
    for key, _seq, data in rows:
        parts.setdefault(str(key), []).append(bytes(data))
    return {key: b"".join(p) if len(p) > 1 else p[0] for key, p in parts.items()}


class InlineRouting:
    """The configured backend, with inline keys routed to the ``blob_chunks`` table.

    Why a router rather than a second store beside the first: every reader of blobs (WADO-RS,
    C-MOVE, C-GET, ``verify``, ``keys rewrap``) goes on naming a blob by its key alone.
    """

    def __init__(self, backend: BlobStore, engine: Engine) -> None:
        self.backend = backend
        self.table = DatabaseBlobStore(engine)
        self.engine = engine
        self.name = backend.name

    def _route(self, key: str) -> BlobStore:
        return self.table if is_inline(key) else self.backend

    def put(self, key: str, data: Payload) -> BlobInfo:
        """A put outside a transaction (``keys rewrap``): its own commit."""
        return self._route(key).put(key, data)

    def open(self, key: str) -> Iterator[bytes]:
        return self._route(key).open(key)

    def get(self, key: str) -> bytes:
        return self._route(key).get(key)

    def delete(self, key: str) -> None:
        self._route(key).delete(key)

    def exists(self, key: str) -> bool:
        return self._route(key).exists(key)

    def prepare(self, prefixes: Iterable[str]) -> None:
        self.backend.prepare(prefixes)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        yield from self.backend.iter_keys(prefix)
        yield from (k for k in self.table.iter_keys(prefix) if is_inline(k))

    def close(self) -> None:
        self.backend.close()
