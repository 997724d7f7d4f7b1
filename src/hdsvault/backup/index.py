"""The index: chunk ID -> (pack, offset, length), kept in encrypted ``index/`` files.

Why an index at all: deduplication must know, without reading packs, whether a chunk is
already stored, and restore must know where a blob lives. Why it is only a cache: every entry
is also in its pack's header, so ``rebuild_index`` recreates it from the packs alone (a lost
or corrupt index never loses data). Format §7.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from hdsvault.backup.crypto import Sealer
from hdsvault.backup.errors import CorruptObjectError
from hdsvault.backup.pack import ENTRY, PackEntry, decode_entries, encode_entries
from hdsvault.backup.repository import RepositoryBackend

__all__ = ["INDEX_AAD", "Index", "Location", "decode_index_file", "encode_index_file"]

INDEX_AAD = b"hdsvault/backup/v1/index"
INDEX_VERSION = 1
_COUNT = struct.Struct("<I")


class Location(NamedTuple):
    """Where a blob is stored."""

    pack_id: bytes
    type: int
    compression: int
    offset: int
    length: int
    raw_length: int


@dataclass
class Index:
    """In-memory index: every known blob and every known pack's entries."""

    locations: dict[bytes, Location] = field(default_factory=dict)
    packs: dict[bytes, list[PackEntry]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    """Names of the index files this index was loaded from (superseded ones excluded)."""

    def add_pack(self, pack_id: bytes, entries: Iterable[PackEntry]) -> None:
        listed = list(entries)
        self.packs[pack_id] = listed
        locations = self.locations
        for e in listed:
            locations[e.chunk_id] = Location(
                pack_id, e.type, e.compression, e.offset, e.length, e.raw_length
            )

    def remove_pack(self, pack_id: bytes) -> None:
        for e in self.packs.pop(pack_id, ()):
            loc = self.locations.get(e.chunk_id)
            if loc is not None and loc.pack_id == pack_id:
                del self.locations[e.chunk_id]

    def get(self, chunk_id: bytes) -> Location | None:
        return self.locations.get(chunk_id)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self.locations

    def __len__(self) -> int:
        return len(self.locations)


def encode_index_file(
    packs: dict[bytes, list[PackEntry]], supersedes: Iterable[str], sealer: Sealer
) -> tuple[str, bytes]:
    """(object name, sealed bytes) of an index file listing ``packs``."""
    superseded = [bytes.fromhex(name.rsplit("/", 1)[-1]) for name in supersedes]
    parts: list[bytes] = [bytes([INDEX_VERSION]), _COUNT.pack(len(superseded)), *superseded]
    for pack_id, entries in packs.items():
        parts.append(pack_id)
        parts.append(_COUNT.pack(len(entries)))
        parts.append(encode_entries(entries))
    sealed = bytes(sealer.seal(b"".join(parts), INDEX_AAD))
    return f"index/{hashlib.sha256(sealed).hexdigest()}", sealed


def decode_index_file(
    name: str, data: bytes, sealer: Sealer
) -> tuple[list[str], dict[bytes, list[PackEntry]]]:
    """(superseded index names, pack id -> entries); :class:`CorruptObjectError` if bad."""
    if hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[-1]:
        raise CorruptObjectError(f"{name}: content does not match its name (altered)")
    try:
        plain = memoryview(sealer.open(data, INDEX_AAD))
    except CorruptObjectError:
        raise CorruptObjectError(f"{name}: index file does not open (altered)") from None
    try:
        if plain[0] != INDEX_VERSION:
            raise CorruptObjectError(f"{name}: unknown index version {plain[0]}")
        (n_sup,) = _COUNT.unpack_from(plain, 1)
        pos = 1 + _COUNT.size
        superseded = [
            f"index/{plain[pos + 32 * i : pos + 32 * (i + 1)].hex()}" for i in range(n_sup)
        ]
        pos += 32 * n_sup
        packs: dict[bytes, list[PackEntry]] = {}
        while pos < len(plain):
            pack_id = bytes(plain[pos : pos + 32])
            (count,) = _COUNT.unpack_from(plain, pos + 32)
            pos += 32 + _COUNT.size
            end = pos + count * ENTRY.size
            if end > len(plain) or len(pack_id) != 32:
                raise CorruptObjectError(f"{name}: truncated pack list")
            packs[pack_id] = decode_entries(plain[pos:end], name)
            pos = end
    except (IndexError, struct.error) as exc:
        raise CorruptObjectError(f"{name}: malformed index file") from exc
    return superseded, packs


def load_index(backend: RepositoryBackend, sealer: Sealer) -> tuple[Index, list[tuple[str, str]]]:
    """Load every index file; returns the index and (name, problem) for unreadable files."""
    decoded: dict[str, tuple[list[str], dict[bytes, list[PackEntry]]]] = {}
    problems: list[tuple[str, str]] = []
    for name in backend.list("index"):
        try:
            decoded[name] = decode_index_file(name, backend.get(name), sealer)
        except CorruptObjectError as exc:
            problems.append((name, str(exc)))
    superseded = {s for sup, _ in decoded.values() for s in sup}
    index = Index()
    for name, (_, packs) in decoded.items():
        if name in superseded:
            continue
        index.files.append(name)
        for pack_id, entries in packs.items():
            index.add_pack(pack_id, entries)
    return index, problems


def iter_pack_ids(names: Iterable[str]) -> Iterator[bytes]:
    """Pack ids of ``data/`` object names that look like pack names."""
    for name in names:
        tail = name.rsplit("/", 1)[-1]
        if len(tail) == 64:
            try:
                yield bytes.fromhex(tail)
            except ValueError:
                continue
