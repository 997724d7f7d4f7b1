"""The ``config`` object: repository id, format version and the writers' parameters.

Why plaintext: a reader needs the repository id (HKDF salt, key-wrapping context) before any
key is open. Its integrity is covered by the signed manifests, which record its SHA-256
(format §3, §8.1).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hdsvault.backup.errors import RepositoryFormatError

__all__ = [
    "FORMAT_VERSION",
    "ChunkerParams",
    "RepositoryConfig",
    "format_time",
    "parse_time",
    "utc_now",
]

FORMAT_VERSION = 1
KiB = 1024
MiB = 1024 * KiB


def format_time(when: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z`` (format §1)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Inverse of :func:`format_time` (accepts any RFC 3339 offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def utc_now() -> str:
    return format_time(datetime.now(UTC))


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC 2020 parameters (format §9). Tests use small sizes to stay fast."""

    min_size: int = 256 * KiB
    avg_size: int = 1 * MiB
    max_size: int = 4 * MiB
    normalization: int = 1

    def __post_init__(self) -> None:
        if not (64 <= self.min_size <= self.avg_size <= self.max_size):
            raise ValueError("chunker sizes must satisfy 64 <= min <= avg <= max")
        if not (256 <= self.avg_size <= 4 * MiB and 1024 <= self.max_size <= 16 * MiB):
            raise ValueError("chunker sizes out of FastCDC range (avg <= 4 MiB, max <= 16 MiB)")
        if self.min_size > 1 * MiB or not 0 <= self.normalization <= 3:
            raise ValueError("chunker min_size must be <= 1 MiB and normalization in 0..3")


@dataclass(frozen=True)
class RepositoryConfig:
    """Contents of the ``config`` object."""

    id: str = field(default_factory=lambda: secrets.token_hex(32))
    created: str = field(default_factory=utc_now)
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    compression_level: int = 3
    pack_size: int = 16 * MiB

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT_VERSION,
            "id": self.id,
            "created": self.created,
            "chunker": {
                "algorithm": "fastcdc-2020",
                "min_size": self.chunker.min_size,
                "avg_size": self.chunker.avg_size,
                "max_size": self.chunker.max_size,
                "normalization": self.chunker.normalization,
                "seed": "hkdf",
            },
            "compression": {"algorithm": "zstd", "level": self.compression_level},
            "pack_size": self.pack_size,
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RepositoryConfig:
        try:
            doc: Any = json.loads(data)
        except ValueError as exc:
            raise RepositoryFormatError("config is not JSON: not an hdsvault repository") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
            found = doc.get("format") if isinstance(doc, dict) else None
            raise RepositoryFormatError(
                f"repository format {found!r} is not supported (this hdsvault reads "
                f"format {FORMAT_VERSION})"
            )
        try:
            rid = str(doc["id"])
            if len(bytes.fromhex(rid)) != 32:
                raise ValueError("id")
            ch = doc["chunker"]
            return cls(
                id=rid,
                created=str(doc["created"]),
                chunker=ChunkerParams(
                    int(ch["min_size"]),
                    int(ch["avg_size"]),
                    int(ch["max_size"]),
                    int(ch.get("normalization", 1)),
                ),
                compression_level=int(doc["compression"]["level"]),
                pack_size=int(doc["pack_size"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RepositoryFormatError(f"config is malformed ({exc})") from exc
