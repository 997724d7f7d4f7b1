"""The blob-store interface shared by the filesystem, database and S3 backends.

Keys are opaque ASCII paths chosen by the caller (``<tenant>/<ab>/<random id>``): they name
no patient and reveal nothing but the tenant. Payloads go in as bytes or as an iterable of
byte chunks (streaming: a large instance never has to be one buffer) and come out as an
iterator of chunks or as one ``bytes``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,7}$")
"""Keys are relative paths of safe segments: no ``..``, no absolute path, no empty segment."""

Payload = bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview]


class BlobError(Exception):
    """A blob operation failed (I/O, backend unreachable); the message says which blob."""


class BlobNotFound(BlobError):
    """No blob under that key."""


@dataclass(frozen=True)
class BlobInfo:
    """What a put stored: the key, the size in bytes and the SHA-256 of those bytes."""

    key: str
    size: int
    sha256: bytes


def check_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key) or len(key) > 200:
        raise BlobError(f"invalid blob key {key[:80]!r}")
    return key


def chunks_of(data: Payload) -> Iterator[bytes | bytearray | memoryview]:
    """``data`` as a sequence of chunks (one chunk for a plain buffer)."""
    if isinstance(data, bytes | bytearray | memoryview):
        yield data
    else:
        yield from data


class Hasher:
    """Counts and hashes the bytes of a put as they go by (one pass over the payload)."""

    __slots__ = ("_h", "size")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._h.update(chunk)
        self.size += memoryview(chunk).nbytes

    def info(self, key: str) -> BlobInfo:
        return BlobInfo(key, self.size, self._h.digest())


@runtime_checkable
class BlobStore(Protocol):
    """Durable storage of opaque byte strings under keys.

    ``put`` returns only once the bytes are durable (fsync, committed transaction, or the
    object store's acknowledgement) and replaces any blob of the same key atomically: a
    reader sees the old or the new blob, never a mix.
    """

    name: str

    def put(self, key: str, data: Payload) -> BlobInfo: ...

    def open(self, key: str) -> Iterator[bytes]:
        """The blob's bytes in chunks; raises :class:`BlobNotFound`."""
        ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None:
        """Remove the blob; no error if it does not exist."""
        ...

    def exists(self, key: str) -> bool: ...

    def prepare(self, prefixes: Iterable[str]) -> None:
        """A hint: puts under these key prefixes will come. The filesystem backend creates
        their directories now, with one flush, instead of one directory (and one flush) at a
        time on the write path; other backends have nothing to prepare."""
        ...

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, in no particular order."""
        ...

    def close(self) -> None: ...


def sha256_of(chunks: Iterable[bytes]) -> tuple[int, bytes]:
    """Size and SHA-256 of a chunk stream (used by verify)."""
    h = Hasher()
    for c in chunks:
        h.update(c)
    return h.size, h.info("").sha256
