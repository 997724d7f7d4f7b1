"""Sealing (AES-256-GCM) and the blob codec: compress-then-encrypt, open-then-check.

Why one envelope for everything (format §1.1): a single, audited code path seals blobs, pack
headers, index files, manifests and escrow keys; each use differs only by key and associated
data, and the associated data is what stops a ciphertext from being presented as something
else (a blob under another chunk ID, an index file as a manifest...).

Speed: AES-GCM, HMAC and zstd all release the GIL, so blobs are sealed on a thread pool;
``encrypt_into`` writes straight into the output buffer (no concatenation copy), and zstd
compressors are per thread (they are not thread-safe).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hdsvault.backup.errors import CorruptObjectError

__all__ = [
    "COMPRESSION_NONE",
    "COMPRESSION_ZSTD",
    "OVERHEAD",
    "BlobCodec",
    "Sealer",
    "open_sealed",
    "seal",
]

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1
PROBE_SIZE = 64 * 1024
INCOMPRESSIBLE = 0.98
POORLY_COMPRESSIBLE = 0.5

Buffer = bytes | bytearray | memoryview


def seal(aead: AESGCM, plaintext: Buffer, aad: bytes) -> bytearray:
    """``nonce || ciphertext || tag`` with a fresh random nonce (format §1.1)."""
    out = bytearray(len(plaintext) + OVERHEAD)
    nonce = os.urandom(NONCE_SIZE)
    out[:NONCE_SIZE] = nonce
    aead.encrypt_into(nonce, plaintext, aad, memoryview(out)[NONCE_SIZE:])
    return out


def open_sealed(aead: AESGCM, sealed: Buffer, aad: bytes) -> bytes:
    """Open a sealed object; :class:`CorruptObjectError` if anything is wrong."""
    view = memoryview(sealed)
    if len(view) < OVERHEAD:
        raise CorruptObjectError("sealed object too short (truncated)")
    try:
        return aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
    except InvalidTag:
        raise CorruptObjectError("authentication failed (altered, or wrong key)") from None


class Sealer:
    """One AES-256-GCM key, usable from many threads."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: Buffer, aad: bytes) -> bytearray:
        return seal(self._aead, plaintext, aad)

    def open(self, sealed: Buffer, aad: bytes) -> bytes:
        return open_sealed(self._aead, sealed, aad)


class BlobCodec:
    """Turns a blob's plaintext into its stored form and back (format §6.1)."""

    def __init__(
        self,
        sealer: Sealer,
        chunk_id: Callable[[Buffer], bytes],
        level: int,
    ) -> None:
        self._sealer = sealer
        self._chunk_id = chunk_id
        self._level = level
        self._local = threading.local()

    def _compressors(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdCompressor]:
        pair: tuple[zstandard.ZstdCompressor, zstandard.ZstdCompressor] | None = getattr(
            self._local, "c", None
        )
        if pair is None:
            fast = zstandard.ZstdCompressor(level=1, write_content_size=True)
            main = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
            pair = (fast, main)
            self._local.c = pair
        return pair

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if d is None:
            d = zstandard.ZstdDecompressor()
            self._local.d = d
        return d

    def encode(self, chunk_id: bytes, plaintext: Buffer) -> tuple[int, bytearray]:
        """(compression, sealed blob): zstd if strictly smaller, else stored as is.

        The level is chosen per blob from a level-1 probe of its first 64 KiB (a writer's
        choice; readers do not care, format §6.1): incompressible data (probe >= 98 %) is not
        compressed at all; poorly compressible data (probe > 50 %, e.g. imaging noise) gets
        level 1, which compresses it as well as level 3 at three times the speed; everything
        else gets the configured level.
        """
        compression = COMPRESSION_NONE
        body: Buffer = plaintext
        size = len(plaintext)
        if size > 64:
            fast, main = self._compressors()
            view = memoryview(plaintext)
            probe = fast.compress(view[:PROBE_SIZE])
            ratio = len(probe) / min(size, PROBE_SIZE)
            if ratio < INCOMPRESSIBLE:
                if ratio <= POORLY_COMPRESSIBLE:
                    packed = main.compress(plaintext)
                elif size <= PROBE_SIZE:
                    packed = probe  # the probe was the whole blob
                else:
                    packed = fast.compress(plaintext)
                if len(packed) < size:
                    compression, body = COMPRESSION_ZSTD, packed
        return compression, self._sealer.seal(body, chunk_id)

    def decode(self, chunk_id: bytes, sealed: Buffer, compression: int, raw_length: int) -> bytes:
        """Open, decompress and check a blob against its chunk ID; raise CorruptObjectError."""
        body = self._sealer.open(sealed, chunk_id)
        if compression == COMPRESSION_ZSTD:
            try:
                plain = self._decompressor().decompress(body, max_output_size=raw_length)
            except zstandard.ZstdError as exc:
                raise CorruptObjectError(f"blob {chunk_id.hex()}: bad zstd frame") from exc
        elif compression == COMPRESSION_NONE:
            plain = body
        else:
            raise CorruptObjectError(f"blob {chunk_id.hex()}: unknown compression {compression}")
        if len(plain) != raw_length:
            raise CorruptObjectError(f"blob {chunk_id.hex()}: length differs from its entry")
        if self._chunk_id(plain) != chunk_id:
            raise CorruptObjectError(f"blob {chunk_id.hex()}: content does not match its ID")
        return plain
