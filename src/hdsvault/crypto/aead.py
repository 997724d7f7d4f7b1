"""Envelope AEAD: AES-256-GCM under per-tenant, versioned data keys.

Every resource body (and any other payload that must not reach storage in clear) is sealed by
:meth:`DataKeys.seal` into a self-describing *blob*:

.. code-block:: text

    offset  size  field
    0       1     format      0x01
    1       4     key_version uint32, big-endian: the tenant data-key version that sealed it
    5       12    nonce       random (os.urandom), fresh for every seal
    17      n     ciphertext  AES-256-GCM of the n plaintext bytes
    17+n    16    tag         GCM authentication tag (128 bits)

    total = n + 33 bytes (:data:`OVERHEAD`)

The associated data authenticated by GCM is ``header || ctx.aad()``, where ``header`` is the
first 5 bytes (format and key version) and ``ctx`` is the :class:`SealContext` saying *where*
the plaintext belongs (tenant, kind, item id, version). Consequences:

- a blob copied to another tenant, kind, item or version does not open (context mismatch);
- the key version cannot be rewritten to steer decryption to another key (it is authenticated);
- any flipped bit, truncation or extension fails the tag check.

Why random 96-bit nonces: they need no state shared between processes (several server
workers and the CLI seal with the same key). NIST SP 800-38D bounds random-nonce use to 2**32
seals per key, so a tenant's data key must be rotated (``hdsvault keys rotate``, cheap) long
before that many writes.

Speed: the AESGCM object of each key version is built once per :class:`DataKeys`, payloads are
passed to OpenSSL as buffers (``memoryview`` slices, never copied), and
:meth:`DataKeys.seal_into` / :meth:`DataKeys.open_into` use ``AESGCM.encrypt_into`` /
``decrypt_into`` to write straight into a caller's buffer. :meth:`DataKeys.seal` returns
immutable ``bytes`` and therefore pays one copy of the ciphertext; for payloads of a MiB and
more prefer :meth:`DataKeys.seal_into` (see ``bench/crypto.py``).
The format is also documented in ``docs/keys.md``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hdsvault.crypto.errors import DecryptionError

__all__ = [
    "FORMAT_V1",
    "HEADER_SIZE",
    "KEY_SIZE",
    "NONCE_SIZE",
    "OVERHEAD",
    "TAG_SIZE",
    "DataKeys",
    "SealContext",
]

FORMAT_V1 = 0x01
"""First byte of every blob in the format above."""
KEY_SIZE = 32
"""AES-256 data keys."""
HEADER_SIZE = 5
NONCE_SIZE = 12
TAG_SIZE = 16
_PREFIX_SIZE = HEADER_SIZE + NONCE_SIZE
OVERHEAD = _PREFIX_SIZE + TAG_SIZE
"""Bytes a blob adds to its plaintext (33)."""
INPLACE_THRESHOLD = 64 * 1024
"""From this plaintext size on, :meth:`DataKeys.seal` builds the blob in place."""
_MAX_VERSION = 0xFFFFFFFF
_MAX_GCM_INPUT = 2**31 - 1  # per-call limit of the cryptography package

_AAD_DOMAIN = b"hdsvault/seal/v1"

Buffer = bytes | bytearray | memoryview


_u32 = struct.Struct(">I").pack


@dataclass(frozen=True, slots=True)
class SealContext:
    """Where a sealed payload belongs; authenticated with it, so it cannot be moved.

    ``kind`` names the sort of payload (e.g. ``"resource/Patient"``), ``item_id`` the item and
    ``version`` the item version. An ``int`` version and its decimal string denote the same
    context (``1`` and ``"1"``), because callers hold versions as either. The encoded form
    (:meth:`aad`) is computed once, at construction, so that opening and re-sealing with the
    same context (rewrap) pays for it once.
    """

    tenant: str
    kind: str
    item_id: str
    version: int | str
    _aad: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tenant, kind, item_id, version = self.tenant, self.kind, self.item_id, self.version
        if not (
            isinstance(tenant, str)
            and tenant
            and isinstance(kind, str)
            and kind
            and isinstance(item_id, str)
            and item_id
        ):
            raise ValueError(
                "SealContext tenant, kind and item_id must be non-empty str, got "
                f"{tenant!r}, {kind!r}, {item_id!r}"
            )
        if isinstance(version, str):
            if not version:
                raise ValueError("SealContext.version must not be empty")
            v = version.encode("utf-8")
        elif isinstance(version, int) and not isinstance(version, bool):
            v = b"%d" % version
        else:
            raise ValueError(f"SealContext.version must be an int or a str, got {version!r}")
        t, k, i = tenant.encode("utf-8"), kind.encode("utf-8"), item_id.encode("utf-8")
        aad = b"".join(
            (_AAD_DOMAIN, _u32(len(t)), t, _u32(len(k)), k, _u32(len(i)), i, _u32(len(v)), v)
        )
        object.__setattr__(self, "_aad", aad)

    def aad(self) -> bytes:
        """Unambiguous encoding of the context, used as GCM associated data.

        ``b"hdsvault/seal/v1" || u32(len) || tenant || u32(len) || kind || u32(len) || item_id
        || u32(len) || version`` (UTF-8, lengths big-endian; an int version in decimal). Length
        prefixes make the encoding injective: no two distinct contexts share an encoding, so
        no choice of ids (say, one containing a separator) can make two contexts collide.
        """
        return self._aad


_HEADER = struct.Struct(">BI")  # format, key_version


def _byte_view(data: Buffer) -> memoryview:
    """A flat unsigned-byte view of ``data`` (no copy), whatever the buffer's item format."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _where(ctx: SealContext) -> str:
    # Identifiers only: never key material nor payload bytes.
    return f"{ctx.kind} {ctx.item_id} v{ctx.version} of tenant {ctx.tenant}"


class DataKeys:
    """The data keys of one tenant, by version, and the current one (used to seal).

    Built by the keyring from unwrapped keys. Blobs sealed under any held version open;
    new seals use :attr:`current_version`. The ``AESGCM`` object of a version (its AES key
    schedule) is built at most once per instance: the current one at construction, the others
    on first use, so building a ``DataKeys`` for a tenant with many retired versions stays
    cheap. Instances are immutable in effect and safe to share between threads; keep one per
    tenant and key set rather than building one per request.
    """

    __slots__ = ("_current", "_current_aead", "_current_header", "_keys", "_opened")

    def __init__(self, keys: Mapping[int, bytes], current: int) -> None:
        checked: dict[int, bytes] = {}
        for version, key in keys.items():
            if isinstance(version, bool) or not isinstance(version, int):
                raise ValueError(f"data-key version must be an int, got {version!r}")
            if not 0 <= version <= _MAX_VERSION:
                raise ValueError(f"data-key version {version} does not fit in uint32")
            if not isinstance(key, bytes | bytearray | memoryview):
                raise ValueError(f"data key v{version} must be bytes, got {type(key).__name__}")
            key_bytes = bytes(key)
            if len(key_bytes) != KEY_SIZE:
                raise ValueError(
                    f"data key v{version} is {len(key_bytes)} bytes, expected {KEY_SIZE} (AES-256)"
                )
            checked[version] = key_bytes
        if current not in checked:
            held = ", ".join(str(v) for v in sorted(checked)) or "none"
            raise ValueError(f"current data-key version {current} has no key (held: {held})")
        self._keys = checked
        self._current = current
        self._current_aead = AESGCM(checked[current])
        self._current_header = _HEADER.pack(FORMAT_V1, current)
        # version -> (AESGCM, header bytes), filled lazily by _opener.
        self._opened: dict[int, tuple[AESGCM, bytes]] = {
            current: (self._current_aead, self._current_header)
        }

    def __repr__(self) -> str:
        return f"DataKeys(versions={list(self.versions)}, current={self._current})"

    @property
    def current_version(self) -> int:
        """The version new seals use."""
        return self._current

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version this instance can open, ascending."""
        return tuple(sorted(self._keys))

    @staticmethod
    def sealed_size(plaintext_size: int) -> int:
        """Size of the blob sealing ``plaintext_size`` bytes (plaintext + 33)."""
        return plaintext_size + OVERHEAD

    @staticmethod
    def key_version_of(blob: Buffer) -> int:
        """The data-key version a blob was sealed with (read from its header, not verified).

        Raises :class:`DecryptionError` if ``blob`` is too short to be a blob or is not in
        format 0x01. The version is authenticated only when the blob is opened.
        """
        return _parse_header(_byte_view(blob), None)

    # -- sealing ------------------------------------------------------------------------------

    def seal(self, plaintext: Buffer, ctx: SealContext) -> bytes | bytearray:
        """Encrypt ``plaintext`` for ``ctx`` under the current key; returns a new blob.

        Small payloads are assembled as ``bytes`` (a join is the fastest there). From
        :data:`INPLACE_THRESHOLD` bytes on, the blob is a ``bytearray`` filled in place by
        :meth:`seal_into`: one allocation and no copy of the ciphertext, which keeps large
        payloads at the speed of bare AES-GCM. Database drivers accept both types.
        """
        size = _byte_view(plaintext).nbytes
        if size >= INPLACE_THRESHOLD:
            out = bytearray(size + OVERHEAD)
            self.seal_into(plaintext, ctx, out)
            return out
        nonce = os.urandom(NONCE_SIZE)
        header = self._current_header
        try:
            body = self._current_aead.encrypt(nonce, plaintext, header + ctx._aad)
        except OverflowError:
            raise ValueError(_too_large(plaintext)) from None
        return b"".join((header, nonce, body))

    def seal_into(self, plaintext: Buffer, ctx: SealContext, out: bytearray | memoryview) -> int:
        """Seal ``plaintext`` for ``ctx`` straight into ``out``; returns the blob size ``n``.

        The blob occupies ``out[:n]`` with ``n = sealed_size(nbytes(plaintext))``; ``out`` must
        be writable, at least that large, and must not overlap ``plaintext``. Header and nonce
        are written in place and ``AESGCM.encrypt_into`` writes ciphertext and tag right behind
        them: no byte of the payload is copied and, with a reused buffer, nothing is allocated.
        """
        size = _byte_view(plaintext).nbytes + OVERHEAD
        dest = _byte_view(out)
        if dest.readonly:
            raise ValueError("seal_into needs a writable output buffer")
        if dest.nbytes < size:
            raise ValueError(f"output buffer holds {dest.nbytes} bytes, the blob needs {size}")
        nonce = os.urandom(NONCE_SIZE)
        header = self._current_header
        dest[:HEADER_SIZE] = header
        dest[HEADER_SIZE:_PREFIX_SIZE] = nonce
        try:
            self._current_aead.encrypt_into(
                nonce, plaintext, header + ctx._aad, dest[_PREFIX_SIZE:size]
            )
        except OverflowError:
            raise ValueError(_too_large(plaintext)) from None
        return size

    # -- opening ------------------------------------------------------------------------------

    def open(self, blob: Buffer, ctx: SealContext) -> bytes:
        """Decrypt and authenticate ``blob`` for ``ctx``; returns the plaintext.

        Raises :class:`DecryptionError` if the blob is truncated, tampered with, sealed for
        another context, or sealed under a key version this instance does not hold. Nonce and
        ciphertext are passed to ``AESGCM.decrypt`` as zero-copy views of ``blob``, and
        ``decrypt`` returns fresh ``bytes`` directly: ``decrypt_into`` (see :meth:`open_into`)
        could only add a ``bytes()`` copy here.
        """
        view = memoryview(blob)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        # _parse_header inlined on this hot path (saves a call for small payloads).
        if view.nbytes < OVERHEAD or view[0] != FORMAT_V1:
            _parse_header(view, ctx)  # raises the precise DecryptionError
        version: int = _HEADER.unpack_from(view)[1]
        opener = self._opened.get(version) or self._opener(version, ctx)
        try:
            return opener[0].decrypt(
                view[HEADER_SIZE:_PREFIX_SIZE], view[_PREFIX_SIZE:], opener[1] + ctx._aad
            )
        except InvalidTag:
            raise DecryptionError(_tag_failure(ctx)) from None

    def open_into(self, blob: Buffer, ctx: SealContext, out: bytearray | memoryview) -> int:
        """Open ``blob`` for ``ctx`` into ``out[:n]``; returns ``n``, the plaintext size.

        Same checks as :meth:`open`, no allocation for the plaintext. ``AESGCM.decrypt_into``
        writes plaintext before it checks the tag, so on failure ``out[:n]`` is zeroed before
        :class:`DecryptionError` is raised: unauthenticated plaintext never stays behind in
        the caller's buffer.
        """
        view = _byte_view(blob)
        version = _parse_header(view, ctx)
        opener = self._opened.get(version) or self._opener(version, ctx)
        size = view.nbytes - OVERHEAD
        dest = _byte_view(out)
        if dest.readonly:
            raise ValueError("open_into needs a writable output buffer")
        if dest.nbytes < size:
            raise ValueError(f"output buffer holds {dest.nbytes} bytes, the plaintext needs {size}")
        target = dest[:size]
        try:
            opener[0].decrypt_into(
                view[HEADER_SIZE:_PREFIX_SIZE], view[_PREFIX_SIZE:], opener[1] + ctx._aad, target
            )
        except InvalidTag:
            target[:] = bytes(size)
            raise DecryptionError(_tag_failure(ctx)) from None
        return size

    def _opener(self, version: int, ctx: SealContext) -> tuple[AESGCM, bytes]:
        """Build (once) the AESGCM and header of a non-current version."""
        key = self._keys.get(version)
        if key is None:
            held = ", ".join(str(v) for v in sorted(self._keys))
            raise DecryptionError(
                f"blob ({_where(ctx)}) was sealed with data-key version {version}, which is not "
                f"held (held: {held}): that version was retired or shredded, or the blob is foreign"
            )
        # Benign race: two threads may both build it; either result is correct.
        opener = self._opened[version] = (AESGCM(key), _HEADER.pack(FORMAT_V1, version))
        return opener


def _parse_header(view: memoryview, ctx: SealContext | None) -> int:
    """Check a blob's length and format byte; return its key version."""
    if view.nbytes < OVERHEAD:
        where = f" ({_where(ctx)})" if ctx is not None else ""
        raise DecryptionError(
            f"blob{where} is {view.nbytes} bytes, shorter than the {OVERHEAD}-byte minimum: "
            "truncated or not an hdsvault blob"
        )
    fmt: int
    version: int
    fmt, version = _HEADER.unpack_from(view)
    if fmt != FORMAT_V1:
        where = f" ({_where(ctx)})" if ctx is not None else ""
        raise DecryptionError(
            f"blob{where} has format byte 0x{fmt:02x}, expected 0x{FORMAT_V1:02x}: "
            "not an hdsvault blob, or corrupted"
        )
    return version


def _tag_failure(ctx: SealContext) -> str:
    return (
        f"cannot open {_where(ctx)}: authentication failed (tampered or truncated ciphertext, "
        "ciphertext moved from another context, or wrong key)"
    )


def _too_large(plaintext: Buffer) -> str:
    size = _byte_view(plaintext).nbytes
    return (
        f"payload of {size} bytes exceeds the {_MAX_GCM_INPUT}-byte limit of one AES-GCM call; "
        "split it into chunks and seal each one"
    )
