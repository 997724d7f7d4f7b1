"""The blob store: an open repository's keys, index and pack writers.

Why a separate layer: ``snapshot``, ``verify`` and ``forget`` all speak in blobs (store this
plaintext, give me that chunk), never in packs, offsets or nonces. The store hides the
deduplication check, the pack assembly on a background uploader thread, and the checks done
when a blob is read back.

Concurrency model: blobs are sealed on worker threads (the crypto and compression release the
GIL); :meth:`BlobStore.store` is safe to call from many threads; one uploader thread assembles,
hashes and writes full packs, at most two queued, so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from hdsvault.backup.config import RepositoryConfig
from hdsvault.backup.crypto import BlobCodec
from hdsvault.backup.errors import CorruptObjectError, ObjectExistsError, ObjectMissingError
from hdsvault.backup.index import Index, encode_index_file
from hdsvault.backup.keys import RepositoryKeys
from hdsvault.backup.pack import BlobType, PackBuilder, PackEntry, pack_name
from hdsvault.backup.repository import RepositoryBackend

__all__ = ["BlobStore", "StoreStats"]

Buffer = bytes | bytearray | memoryview


@dataclass
class StoreStats:
    """What a write session added to the repository."""

    new_chunks: int = 0
    new_bytes: int = 0
    """Plaintext bytes of new data blobs."""
    new_tree_bytes: int = 0
    """Plaintext bytes of new tree blobs (directory listings)."""
    stored_bytes: int = 0
    packs: int = 0


class BlobStore:
    """Reads and writes blobs of one open repository."""

    def __init__(
        self,
        backend: RepositoryBackend,
        config: RepositoryConfig,
        config_hash: str,
        keys: RepositoryKeys,
        index: Index,
    ) -> None:
        self.backend = backend
        self.config = config
        self.config_hash = config_hash
        self.keys = keys
        self.index = index
        self.codec = BlobCodec(keys.blob, keys.chunk_id, config.compression_level)
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._builders = {t: PackBuilder(t) for t in BlobType}
        self._uploader: ThreadPoolExecutor | None = None
        self._uploads: list[Future[None]] = []
        self._upload_slots = threading.BoundedSemaphore(2)
        self._new_packs: dict[bytes, list[PackEntry]] = {}
        self.stats = StoreStats()

    # -- writing ------------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a write session: forget any state a failed previous session left behind."""
        self.flush_discard()
        self.stats = StoreStats()

    def flush_discard(self) -> None:
        with self._lock:
            self._pending.clear()
            self._builders = {t: PackBuilder(t) for t in BlobType}
            self._new_packs = {}
            self._uploads = []

    def chunk_id(self, plaintext: Buffer) -> bytes:
        return self.keys.chunk_id(plaintext)

    def store(self, blob_type: BlobType, plaintext: Buffer, chunk_id: bytes | None = None) -> bytes:
        """Store ``plaintext`` unless already present; returns its chunk ID. Thread-safe."""
        cid = chunk_id if chunk_id is not None else self.keys.chunk_id(plaintext)
        with self._lock:
            if cid in self.index.locations or cid in self._pending:
                return cid
            self._pending.add(cid)
        compression, sealed = self.codec.encode(cid, plaintext)
        full: PackBuilder | None = None
        with self._lock:
            builder = self._builders[blob_type]
            builder.add(cid, compression, sealed, len(plaintext))
            self.stats.new_chunks += 1
            if blob_type == BlobType.DATA:
                self.stats.new_bytes += len(plaintext)
            else:
                self.stats.new_tree_bytes += len(plaintext)
            self.stats.stored_bytes += len(sealed)
            if builder.size >= self.config.pack_size:
                full = builder
                self._builders[blob_type] = PackBuilder(blob_type)
        if full is not None:
            self._submit(full)
        return cid

    def _submit(self, builder: PackBuilder) -> None:
        self._upload_slots.acquire()
        if self._uploader is None:
            self._uploader = ThreadPoolExecutor(1, thread_name_prefix="hdsvault-pack-upload")
        self._uploads.append(self._uploader.submit(self._upload, builder))

    def _upload(self, builder: PackBuilder) -> None:
        try:
            pack_id, data, entries = builder.assemble(self.keys.header)
            with contextlib.suppress(ObjectExistsError):  # same name = same bytes
                self.backend.put(pack_name(pack_id), data)
            with self._lock:
                self.index.add_pack(pack_id, entries)
                self._new_packs[pack_id] = entries
                self.stats.packs += 1
                for e in entries:
                    self._pending.discard(e.chunk_id)
        finally:
            self._upload_slots.release()

    def flush(self) -> None:
        """Write every partly filled pack and wait for all uploads (raises upload errors)."""
        for blob_type in BlobType:
            with self._lock:
                builder = self._builders[blob_type]
                self._builders[blob_type] = PackBuilder(blob_type)
            if len(builder):
                self._submit(builder)
        uploads, self._uploads = self._uploads, []
        for f in uploads:
            f.result()

    def write_index(self) -> str | None:
        """Flush, then write one index file listing the packs written since the last call."""
        self.flush()
        with self._lock:
            packs, self._new_packs = self._new_packs, {}
        if not packs:
            return None
        name, data = encode_index_file(packs, (), self.keys.index)
        self.backend.put(name, data)
        self.index.files.append(name)
        return name

    def close(self) -> None:
        if self._uploader is not None:
            self._uploader.shutdown(wait=True)
            self._uploader = None

    # -- reading ------------------------------------------------------------------------------

    def load(self, chunk_id: bytes) -> bytes:
        """The checked plaintext of a blob; ObjectMissingError / CorruptObjectError otherwise."""
        loc = self.index.get(chunk_id)
        if loc is None:
            raise ObjectMissingError(f"chunk {chunk_id.hex()} is not in the index")
        name = pack_name(loc.pack_id)
        sealed = self.backend.get_range(name, loc.offset, loc.length)
        if len(sealed) != loc.length:
            raise CorruptObjectError(f"{name}: truncated (blob {chunk_id.hex()} cut short)")
        try:
            return self.codec.decode(chunk_id, sealed, loc.compression, loc.raw_length)
        except CorruptObjectError as exc:
            raise CorruptObjectError(f"{name}: {exc}") from None


ProgressFn = Callable[[int, int], None]
"""``progress(done, total)`` in bytes, called from the operation's thread."""
