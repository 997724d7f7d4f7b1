"""Packs: many sealed blobs in one object, in shuffled order, with an encrypted header.

Why packs: millions of tiny objects are slow on every storage (and expensive on S3); ~16 MiB
objects are not. Why shuffled and a sealed header: the storage operator must learn neither
the order of files nor the sizes of their chunks (format §6.2). Why the pack ID is the SHA-256
of the whole file: ``verify(read_data=True)`` can check every byte against the name without
any key, and a flipped byte is then located blob by blob.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from hdsvault.backup.crypto import COMPRESSION_NONE, COMPRESSION_ZSTD, OVERHEAD, Sealer
from hdsvault.backup.errors import CorruptObjectError
from hdsvault.backup.repository import RepositoryBackend

__all__ = [
    "ENTRY",
    "HEADER_AAD",
    "BlobType",
    "PackBuilder",
    "PackEntry",
    "decode_entries",
    "encode_entries",
    "pack_name",
    "parse_pack_header",
    "read_pack_header",
]

HEADER_AAD = b"hdsvault/backup/v1/pack-header"
HEADER_VERSION = 1
ENTRY = struct.Struct("<BB32sIII")  # type, compression, chunk id, offset, length, raw length
TRAILER = struct.Struct("<I")
_MAX_U32 = 2**32 - 1


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


class PackEntry(NamedTuple):
    """One blob of a pack, as listed in its header and in index files (46 bytes on disk)."""

    type: int
    compression: int
    chunk_id: bytes
    offset: int
    length: int
    raw_length: int


def pack_name(pack_id: bytes | str) -> str:
    """``data/<2 hex>/<id>`` (format §2)."""
    hexid = pack_id if isinstance(pack_id, str) else pack_id.hex()
    return f"data/{hexid[:2]}/{hexid}"


def encode_entries(entries: list[PackEntry]) -> bytes:
    pack = ENTRY.pack
    return b"".join(pack(*e) for e in entries)


def decode_entries(data: bytes | memoryview, what: str) -> list[PackEntry]:
    """Parse a run of 46-byte entries, checking the enumerated fields."""
    if len(data) % ENTRY.size:
        raise CorruptObjectError(f"{what}: entry table has a partial entry")
    entries = [PackEntry(*fields) for fields in ENTRY.iter_unpack(data)]
    for e in entries:
        if e.type not in (BlobType.DATA, BlobType.TREE) or e.compression not in (
            COMPRESSION_NONE,
            COMPRESSION_ZSTD,
        ):
            raise CorruptObjectError(f"{what}: entry with unknown type or compression")
        if e.length < OVERHEAD:
            raise CorruptObjectError(f"{what}: entry shorter than a sealed blob")
    return entries


@dataclass
class PackBuilder:
    """Collects sealed blobs of one type until the pack is big enough, then assembles it."""

    blob_type: BlobType
    blobs: list[tuple[bytes, int, bytearray | bytes, int]] = field(default_factory=list)
    size: int = 0

    def add(self, chunk_id: bytes, compression: int, sealed: bytearray | bytes, raw: int) -> None:
        if len(sealed) > _MAX_U32 or raw > _MAX_U32:
            raise ValueError("blob larger than 4 GiB cannot be stored in format v1")
        self.blobs.append((chunk_id, compression, sealed, raw))
        self.size += len(sealed)

    def __len__(self) -> int:
        return len(self.blobs)

    def assemble(self, header_sealer: Sealer) -> tuple[bytes, bytes, list[PackEntry]]:
        """(pack id, pack bytes, entries), blobs in a uniformly random order."""
        order = list(self.blobs)
        secrets.SystemRandom().shuffle(order)
        entries: list[PackEntry] = []
        parts: list[bytes | bytearray] = []
        offset = 0
        for chunk_id, compression, sealed, raw in order:
            entries.append(
                PackEntry(int(self.blob_type), compression, chunk_id, offset, len(sealed), raw)
            )
            parts.append(sealed)
            offset += len(sealed)
        header = header_sealer.seal(bytes([HEADER_VERSION]) + encode_entries(entries), HEADER_AAD)
        parts.append(header)
        parts.append(TRAILER.pack(len(header)))
        if offset + len(header) + TRAILER.size > _MAX_U32:
            raise ValueError("pack larger than 4 GiB cannot be stored in format v1")
        data = b"".join(parts)
        return hashlib.sha256(data).digest(), data, entries


def parse_pack_header(
    tail: bytes | memoryview, pack_size: int, header_sealer: Sealer, what: str
) -> list[PackEntry]:
    """Entries of a pack from its last ``len(tail)`` bytes (which must contain the header)."""
    view = memoryview(tail)
    if len(view) < TRAILER.size:
        raise CorruptObjectError(f"{what}: too short to be a pack")
    (header_len,) = TRAILER.unpack(view[-TRAILER.size :])
    body_size = pack_size - TRAILER.size - header_len
    if header_len > len(view) - TRAILER.size or body_size < 0:
        raise CorruptObjectError(f"{what}: header length {header_len} is out of range")
    sealed = view[len(view) - TRAILER.size - header_len : len(view) - TRAILER.size]
    try:
        plain = header_sealer.open(sealed, HEADER_AAD)
    except CorruptObjectError:
        raise CorruptObjectError(f"{what}: pack header does not open (altered)") from None
    if not plain or plain[0] != HEADER_VERSION:
        raise CorruptObjectError(f"{what}: unknown pack header version")
    entries = decode_entries(memoryview(plain)[1:], what)
    for e in entries:
        if e.offset + e.length > body_size:
            raise CorruptObjectError(f"{what}: blob {e.chunk_id.hex()} lies outside the pack")
    return entries


def header_length(tail: bytes) -> int:
    """The header length stored in a pack's 4-byte trailer."""
    (n,) = TRAILER.unpack(tail[-TRAILER.size :])
    return int(n)


def read_pack_header(
    backend: RepositoryBackend, name: str, header_sealer: Sealer, size: int | None = None
) -> list[PackEntry]:
    """Read and open the header of the stored pack ``name`` (two ranged reads at most)."""
    if size is None:
        size = backend.size(name)
    if size < TRAILER.size:
        raise CorruptObjectError(f"{name}: too short to be a pack")
    guess = min(size, 16 * 1024)
    tail = backend.get_range(name, size - guess, guess)
    needed = header_length(tail) + TRAILER.size
    if needed > guess:
        if needed > size:
            raise CorruptObjectError(f"{name}: header length is out of range")
        tail = backend.get_range(name, size - needed, needed)
    return parse_pack_header(tail, size, header_sealer, name)
