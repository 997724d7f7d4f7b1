"""Blind indexes: search keys stored as keyed tokens instead of values.

To find "the patient whose INS is X" without storing X, the database stores
``token(field, X)``, a keyed hash, and a search computes the same token and looks it up.
Whoever reads the database sees tokens, not values, and cannot compute tokens for guesses
without the tenant's index key (which exists only wrapped by the KEK, see ``docs/keys.md``).

Construction:

- per-tenant index key = HKDF-SHA256(ikm = tenant index root key (32 bytes),
  salt = ``b"hdsvault/blind-index/salt/v1"``, info = ``b"hdsvault/blind-index/v1/" || tenant``
  (UTF-8), length = 32). The salt is a fixed, public domain separator (HKDF's salt need not be
  secret; a fixed one keeps derivation reproducible from the root key alone). A distinct key
  per tenant means equal values of two tenants give unrelated tokens.
- ``token(field, value)`` = first 16 bytes of HMAC-SHA256(index key,
  ``u32_be(len(field)) || field || value``), ``field`` UTF-8, ``value`` UTF-8 if a ``str``.
  The length prefix makes (field, value) pairs unambiguous; the field name separates the
  token spaces of different fields ("1234" as an INS and "1234" as an MRN differ).

Why 128 bits: an index only needs tokens of different values not to collide. With 2**64
distinct values per field (far beyond any health record count) the collision probability is
still about 2**-1; with 10**9 values it is about 10**-21, i.e. never. Truncating HMAC-SHA256 to
128 bits keeps its pseudo-randomness (RFC 2104 section 5 allows truncation to no less than half
the output) and halves the index size and its B-tree pages compared with 256 bits.

Leakage (by design, see ``docs/keys.md``): equal values in the same tenant and field give equal
tokens, so the database reveals which rows share a value, and how many, but nothing else.
Normalising values (case, spaces, accents) before tokenising is the caller's job, because the
index can only match byte-equal inputs.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["INDEX_ROOT_KEY_SIZE", "TOKEN_SIZE", "BlindIndex"]

TOKEN_SIZE = 16
"""Bytes per token (128 bits, see the module docstring)."""
INDEX_ROOT_KEY_SIZE = 32

_SALT = b"hdsvault/blind-index/salt/v1"
_INFO_PREFIX = b"hdsvault/blind-index/v1/"
_u32 = struct.Struct(">I").pack
_MAX_CACHED_FIELDS = 4096  # FHIR parameters x types: Synthea alone uses ~450


class BlindIndex:
    """The blind-index function of one tenant.

    The HMAC key schedule (inner and outer padded key) is computed once, at construction, and
    the state after absorbing each field's length-prefixed name is kept per field (a few dozen
    fields at most; the cache is bounded). Each token starts from a ``copy()`` of that state
    instead of re-keying and re-hashing the field: see ``bench/crypto.py`` for the gain over
    a one-shot ``hmac.digest``. Instances are safe to share between threads: cached states
    are never updated, only copied.
    """

    __slots__ = ("_base", "_fields", "tenant")

    def __init__(self, index_root_key: bytes, tenant: str) -> None:
        if len(index_root_key) != INDEX_ROOT_KEY_SIZE:
            raise ValueError(
                f"index root key is {len(index_root_key)} bytes, expected {INDEX_ROOT_KEY_SIZE}"
            )
        if not isinstance(tenant, str) or not tenant:
            raise ValueError(f"tenant must be a non-empty str, got {tenant!r}")
        self.tenant = tenant
        index_key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=_SALT,
            info=_INFO_PREFIX + tenant.encode("utf-8"),
        ).derive(bytes(index_root_key))
        self._base = hmac.new(index_key, digestmod=hashlib.sha256)
        self._fields: dict[str, hmac.HMAC] = {}

    def __repr__(self) -> str:
        return f"BlindIndex(tenant={self.tenant!r})"

    def _field_state(self, field: str) -> hmac.HMAC:
        state = self._fields.get(field)
        if state is None:
            f = field.encode("utf-8")
            state = self._base.copy()
            state.update(_u32(len(f)) + f)
            if len(self._fields) < _MAX_CACHED_FIELDS:
                self._fields[field] = state
        return state

    def token(self, field: str, value: str | bytes) -> bytes:
        """The 16-byte token of ``value`` in ``field`` (``str`` values are UTF-8 encoded)."""
        h = self._field_state(field).copy()
        h.update(value.encode("utf-8") if isinstance(value, str) else value)
        return h.digest()[:TOKEN_SIZE]

    def tokens(self, field: str, values: Iterable[str | bytes]) -> list[bytes]:
        """Tokens of many values of one field, in order."""
        prefixed = self._field_state(field)
        out: list[bytes] = []
        append = out.append
        for value in values:
            h = prefixed.copy()
            h.update(value.encode("utf-8") if isinstance(value, str) else value)
            append(h.digest()[:TOKEN_SIZE])
        return out
