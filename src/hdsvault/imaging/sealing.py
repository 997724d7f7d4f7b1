"""Chunked AEAD for instance payloads: a DICOM file of any size sealed segment by segment.

Why chunks: one AES-GCM call is limited to 2**31-1 bytes and would need the whole file (plus
its ciphertext) in memory; multi-frame studies (whole-slide, tomosynthesis) exceed that
comfortably. The payload is cut into segments of ``chunk`` plaintext bytes (default 4 MiB,
``[blobs] chunk_bytes``), each sealed with the tenant's data key (envelope format of
``docs/keys.md``) and context::

    SealContext(tenant, kind="imaging/instance", item_id=<instance id>,
                version="<i>/<n>/<chunk>/<size>")

so that a segment cannot be moved to another instance, reordered (``i``), dropped or
duplicated (``n``), and the header below cannot be altered (``chunk``, ``size``). Most
instances (a CT slice is ~0.5 MiB) are one segment.

Blob layout (what the blob store holds)::

    offset 0   4  magic  b"HVI1"
           4   4  chunk  u32 big-endian: plaintext bytes per segment
           8   8  size   u64 big-endian: plaintext bytes in total
          16   .. segments: sealed(i) = 33 + min(chunk, size - i*chunk) bytes, i = 0..n-1
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from hdsvault.crypto.aead import OVERHEAD, DataKeys, SealContext
from hdsvault.crypto.errors import DecryptionError

MAGIC = b"HVI1"
HEADER = struct.Struct(">4sIQ")
KIND = "imaging/instance"


def segments(size: int, chunk: int) -> int:
    return max(1, -(-size // chunk))


def _ctx(tenant: str, item: str, i: int, n: int, chunk: int, size: int) -> SealContext:
    return SealContext(tenant, KIND, item, f"{i}/{n}/{chunk}/{size}")


def sealed_size(size: int, chunk: int) -> int:
    return HEADER.size + size + segments(size, chunk) * OVERHEAD


def seal(keys: DataKeys, tenant: str, item: str, data: bytes | memoryview, chunk: int) -> bytearray:
    """The whole sealed blob, built in one buffer (no copy of the ciphertext)."""
    view = memoryview(data)
    size = view.nbytes
    n = segments(size, chunk)
    out = bytearray(sealed_size(size, chunk))
    HEADER.pack_into(out, 0, MAGIC, chunk, size)
    dest = memoryview(out)
    pos = HEADER.size
    for i in range(n):
        part = view[i * chunk : (i + 1) * chunk]
        pos += keys.seal_into(part, _ctx(tenant, item, i, n, chunk, size), dest[pos:])
    return out


def seal_stream(
    keys: DataKeys, tenant: str, item: str, parts: Iterable[bytes], size: int, chunk: int
) -> Iterator[bytes | bytearray]:
    """Seal a payload given as a stream of plaintext pieces (size known in advance)."""
    n = segments(size, chunk)
    yield HEADER.pack(MAGIC, chunk, size)
    pending = bytearray()
    i = 0
    for p in parts:
        pending += p
        while len(pending) >= chunk and i < n:
            yield keys.seal(bytes(pending[:chunk]), _ctx(tenant, item, i, n, chunk, size))
            del pending[:chunk]
            i += 1
    if i < n:
        yield keys.seal(bytes(pending), _ctx(tenant, item, i, n, chunk, size))


def _header(blob: bytes | memoryview) -> tuple[int, int]:
    if len(blob) < HEADER.size:
        raise DecryptionError("instance blob is truncated (no header)")
    magic, chunk, size = HEADER.unpack_from(blob)
    if magic != MAGIC or chunk <= 0:
        raise DecryptionError("instance blob has no valid header")
    return chunk, size


def key_version(parts: Iterable[bytes]) -> int:
    """The data-key version that sealed a blob given as a stream (read from segment 0's
    envelope header; authenticated only when the blob is opened)."""
    need = HEADER.size + OVERHEAD
    head = bytearray()
    for p in parts:
        head += p
        if len(head) >= need:
            break
    _header(bytes(head[: HEADER.size]))
    if len(head) < need:
        raise DecryptionError("instance blob is truncated (no first segment)")
    return DataKeys.key_version_of(bytes(head[HEADER.size : need]))


def open_blob(keys: DataKeys, tenant: str, item: str, blob: bytes) -> bytes:
    """The plaintext of a whole blob; any tampering raises :class:`DecryptionError`."""
    view = memoryview(blob)
    chunk, size = _header(view)
    if segments(size, chunk) == 1 and view.nbytes == sealed_size(size, chunk):
        return keys.open(view[HEADER.size :], _ctx(tenant, item, 0, 1, chunk, size))
    out = bytearray(size)
    open_blob_into(keys, tenant, item, blob, out)
    return bytes(out)


def plaintext_size(blob: bytes | memoryview) -> int:
    """The plaintext size a blob's header declares (authenticated only when it is opened)."""
    return _header(blob)[1]


def open_blob_into(
    keys: DataKeys, tenant: str, item: str, blob: bytes | memoryview, out: memoryview | bytearray
) -> int:
    """Open a whole blob straight into ``out`` (at least :func:`plaintext_size` bytes long);
    returns the plaintext size. Same checks as :func:`open_blob`, and no plaintext copy: a
    retrieval decrypts each instance into its place in the response body. On failure the
    segments written so far are zeroed (unauthenticated plaintext never stays behind)."""
    view = memoryview(blob)
    chunk, size = _header(view)
    n = segments(size, chunk)
    if view.nbytes != sealed_size(size, chunk):
        raise DecryptionError(f"instance blob {item} has the wrong length")
    dest = memoryview(out)
    if dest.nbytes < size:
        raise ValueError(f"output buffer holds {dest.nbytes} bytes, the instance needs {size}")
    pos, dst = HEADER.size, 0
    try:
        for i in range(n):
            plain = min(chunk, size - i * chunk)
            seg = view[pos : pos + plain + OVERHEAD]
            dst += keys.open_into(seg, _ctx(tenant, item, i, n, chunk, size), dest[dst:])
            pos += plain + OVERHEAD
    except DecryptionError:
        dest[:dst] = bytes(dst)
        raise
    return size


def open_stream(keys: DataKeys, tenant: str, item: str, parts: Iterable[bytes]) -> Iterator[bytes]:
    """Plaintext segments of a blob read as a stream (memory: one segment)."""
    buf = bytearray()
    it = iter(parts)
    header: tuple[int, int] | None = None
    i = n = chunk = size = 0
    for p in it:
        buf += p
        if header is None:
            if len(buf) < HEADER.size:
                continue
            header = chunk, size = _header(bytes(buf[: HEADER.size]))
            n = segments(size, chunk)
            del buf[: HEADER.size]
        while i < n:
            need = min(chunk, size - i * chunk) + OVERHEAD
            if len(buf) < need:
                break
            yield keys.open(bytes(buf[:need]), _ctx(tenant, item, i, n, chunk, size))
            del buf[:need]
            i += 1
    if header is None or i < n or buf:
        raise DecryptionError(f"instance blob {item} is truncated or too long")
