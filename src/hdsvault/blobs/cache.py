"""A process cache of sealed blobs, for retrievals (WADO-RS, C-GET, C-MOVE).

Why: every retrieval commits its journal entry before it answers (invariant 2), and a SQLite
reader that finds the database changed since its last transaction drops its whole page cache.
So each retrieval of a study of small instances read its blobs' pages from the operating
system again: 40 x 39 KB took 1.1-1.8 ms with a commit since the previous read, 0.45-0.6 ms
without (measured in-process), while Orthanc reads its files from the page cache. Image
viewers fetch the same studies again and again (the current study while it is read, the
priors beside it); a bounded cache of the sealed bytes spares those reads.

What it holds: the sealed bytes exactly as stored, never plaintext; each retrieval still opens
(and so authenticates) them with the tenant's data key, after its journal entry is durable.
Entries are keyed by blob key: an inline key names one blob for the whole of its life (a fresh
random id, never rewritten: ``keys rewrap`` writes a new key and deletes the old one, an
erasure deletes the row that names it), so a reader that found a key in the index never gets
stale bytes for it. What it does not do: notice a blob altered in the database after it was
cached. Until the entry is evicted, retrievals serve the bytes first read, which authenticate
(the alteration is not served), and ``hdsvault verify``, which reads the database, names the
altered blob.

Bounded by ``[blobs] inline_cache_bytes`` (least recently used first out; 0 disables it).

The blobs of the backend (files, objects) get a cache of their own, for the same reason and
with the same properties, bounded by ``[blobs] file_cache_bytes`` (:meth:`get`): a study of
40 x 525 KB read from the page cache cost its read copies and one allocation per instance
(server CPU 14.5 -> 12.5 ms per study once held, two servers side by side; Orthanc keeps a
128 MB storage cache of recently read and written files by default). A backend key also names
one blob for its whole life (a fresh random id; ``keys rewrap`` writes a new key), and an
alteration of the file after it was cached is, as above, not served and named by ``verify``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection

from sqlalchemy import Connection

from hdsvault.blobs import inline


class SealedBlobCache:
    """Sealed blobs by key, least recently used out first (thread-safe)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def fetch(self, conn: Connection, keys: Collection[str]) -> dict[str, bytes]:
        """The inline blobs of ``keys``: from the cache, the others read on ``conn`` (one
        statement, :func:`hdsvault.blobs.inline.fetch`) and kept. Missing keys are absent."""
        found = self._held_of(keys)
        missing = [k for k in keys if k not in found]
        if missing:
            read = inline.fetch(conn, missing)
            self._keep(read)
            found.update(read)
        return found

    def get(self, key: str, read: Callable[[str], bytes]) -> bytes:
        """The blob of ``key``: from the cache, else ``read(key)`` (its errors raised) and kept."""
        held = self._held_of((key,))
        if held:
            return held[key]
        data = read(key)
        self._keep({key: data})
        return data

    def holds(self, key: str) -> bool:
        """Whether ``key`` is held now (not marked as used: a look, not a read)."""
        with self._lock:
            return key in self._held

    def discard(self, keys: Collection[str]) -> None:
        with self._lock:
            for key in keys:
                data = self._held.pop(key, None)
                if data is not None:
                    self._bytes -= len(data)

    def __len__(self) -> int:
        return len(self._held)

    def _held_of(self, keys: Collection[str]) -> dict[str, bytes]:
        """Those of ``keys`` held, each marked as just used."""
        found: dict[str, bytes] = {}
        with self._lock:
            for key in keys:
                data = self._held.get(key)
                if data is not None:
                    self._held.move_to_end(key)
                    found[key] = data
        return found

    def _keep(self, blobs: dict[str, bytes]) -> None:
        with self._lock:
            for key, data in blobs.items():
                if len(data) > self.max_bytes or key in self._held:
                    continue
                self._held[key] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _key, old = self._held.popitem(last=False)
                self._bytes -= len(old)
