"""Blobs in the platform database (table ``blob_chunks``): the PostgreSQL backend.

Why: a site that runs PostgreSQL with streaming replication gets its imaging replicated and
backed up by the same machinery as the records, with no second storage system. Each blob is
stored as rows of at most :data:`ROW_BYTES` (keeps PostgreSQL's TOAST and the driver's
buffers small); a put replaces the rows of its key in one transaction, so readers see the old
or the new blob. Works on SQLite too (tests, small sites), though files are better there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import Engine, delete, func, insert, select

from hdsvault.blobs.base import BlobInfo, BlobNotFound, Hasher, Payload, check_key
from hdsvault.blobs.base import chunks_of as _chunks
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import blob_chunks

ROW_BYTES = 1024 * 1024


class DatabaseBlobStore:
    """Blobs as ``(blob_key, seq, data)`` rows."""

    name = "database"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, key: str, data: Payload) -> BlobInfo:
        check_key(key)
        hasher = Hasher()
        rows: list[dict[str, object]] = []
        pending = bytearray()
        for chunk in _chunks(data):
            hasher.update(chunk)
            pending += chunk
            while len(pending) >= ROW_BYTES:
                rows.append({"blob_key": key, "seq": len(rows), "data": bytes(pending[:ROW_BYTES])})
                del pending[:ROW_BYTES]
        if pending or not rows:
            rows.append({"blob_key": key, "seq": len(rows), "data": bytes(pending)})
        with self.engine.begin() as conn:
            conn.execute(delete(blob_chunks).where(blob_chunks.c.blob_key == key))
            conn.execute(insert(blob_chunks), rows)
        return hasher.info(key)

    def open(self, key: str) -> Iterator[bytes]:
        check_key(key)
        if not self.exists(key):
            raise BlobNotFound(f"no blob {key}")
        return self._rows(key)

    def _rows(self, key: str) -> Iterator[bytes]:
        seq = 0
        while True:  # one row per query: memory stays at one row whatever the blob size
            with read_connection(self.engine) as conn:
                data = conn.execute(
                    select(blob_chunks.c.data).where(
                        blob_chunks.c.blob_key == key, blob_chunks.c.seq == seq
                    )
                ).scalar_one_or_none()
            if data is None:
                return
            yield bytes(data)
            seq += 1

    def get(self, key: str) -> bytes:
        check_key(key)
        with read_connection(self.engine) as conn:
            rows = conn.execute(
                select(blob_chunks.c.data)
                .where(blob_chunks.c.blob_key == key)
                .order_by(blob_chunks.c.seq)
            ).scalars()
            parts = [bytes(r) for r in rows]
        if not parts:
            raise BlobNotFound(f"no blob {key}")
        return b"".join(parts)

    def delete(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(blob_chunks).where(blob_chunks.c.blob_key == check_key(key)))

    def exists(self, key: str) -> bool:
        with read_connection(self.engine) as conn:
            n = conn.execute(
                select(func.count())
                .select_from(blob_chunks)
                .where(blob_chunks.c.blob_key == key, blob_chunks.c.seq == 0)
            ).scalar_one()
        return bool(n)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        with read_connection(self.engine) as conn:
            keys = (
                conn.execute(
                    select(blob_chunks.c.blob_key).where(
                        blob_chunks.c.seq == 0,
                        blob_chunks.c.blob_key.startswith(prefix, autoescape=True),
                    )
                )
                .scalars()
                .all()
            )
        yield from keys

    def prepare(self, prefixes: Iterable[str]) -> None:
        """Nothing to prepare: keys are not paths."""

    def close(self) -> None:
        pass
