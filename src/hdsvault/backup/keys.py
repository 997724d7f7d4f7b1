"""The repository master key: how it is wrapped in ``keys/`` and what is derived from it.

Why two wrappings: the ``kek`` key file is opened by the platform's KEK (file or HSM), so a
copy of the backup media alone opens nothing; the ``escrow`` key file is opened by a
passphrase (scrypt), so another site — or the customer at the end of a hosting contract — can
open the repository without this site's KEK. Every working key is derived with HKDF from the
master key (format §5); none is stored. Formats: ``docs/backup-format.md`` §4-§5.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hdsvault.backup.config import utc_now
from hdsvault.backup.crypto import Sealer, open_sealed, seal
from hdsvault.backup.errors import CorruptObjectError, KeyFileError, WrongKeyError
from hdsvault.crypto.kek import KeyEncryptionKey

__all__ = [
    "DEFAULT_SCRYPT",
    "KeyEncryptionKey",
    "RepositoryKeys",
    "ScryptParams",
    "escrow_key_file",
    "kek_key_file",
    "open_key_file",
    "wrap_context",
]

MASTER_KEY_SIZE = 32
_INFO = "hdsvault/backup/v1/"
_KEY_CHECK_MESSAGE = b"hdsvault/backup/v1/key-check"


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters of an escrow key file (RFC 7914)."""

    n: int = 2**17
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        """Memory scrypt needs (128 * n * r * p bytes), plus slack for ``hashlib``'s check."""
        return 128 * self.n * self.r * self.p + (1 << 20)


DEFAULT_SCRYPT = ScryptParams()


def wrap_context(repository_id: str) -> bytes:
    """Associated data binding a wrapped master key to one repository (format §4)."""
    return b"hdsvault/backup/v1/master-key\x00" + repository_id.encode("ascii")


def _hkdf(master: bytes, salt: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=(_INFO + purpose).encode("ascii")
    ).derive(master)


class RepositoryKeys:
    """The working keys of one open repository, derived from the master key (format §5)."""

    __slots__ = (
        "_chunk_id_key",
        "blob",
        "chunker_seed",
        "header",
        "index",
        "key_check",
        "manifest",
        "master",
    )

    def __init__(self, master: bytes, repository_id: str) -> None:
        if len(master) != MASTER_KEY_SIZE:
            raise WrongKeyError("the unwrapped master key has the wrong size: wrong KEK")
        self.master = master
        salt = bytes.fromhex(repository_id)
        self._chunk_id_key = _hkdf(master, salt, "chunk-id")
        self.blob = Sealer(_hkdf(master, salt, "blob"))
        self.header = Sealer(_hkdf(master, salt, "pack-header"))
        self.index = Sealer(_hkdf(master, salt, "index"))
        self.manifest = Sealer(_hkdf(master, salt, "manifest"))
        check_key = _hkdf(master, salt, "key-check")
        self.key_check = hmac.digest(check_key, _KEY_CHECK_MESSAGE, "sha256").hex()
        seed = int.from_bytes(_hkdf(master, salt, "chunker-seed")[:8], "little") & (2**63 - 1)
        self.chunker_seed = seed or 1

    def chunk_id(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Keyed chunk ID: HMAC-SHA256(K_id, plaintext) (format §6.1)."""
        return hmac.digest(self._chunk_id_key, plaintext, "sha256")


# -- key files ----------------------------------------------------------------------------------


def kek_key_file(master: bytes, repository_id: str, kek: KeyEncryptionKey, key_check: str) -> bytes:
    """A ``keys/`` object holding the master key wrapped by the platform KEK."""
    doc = {
        "format": 1,
        "kind": "kek",
        "repository": repository_id,
        "created": utc_now(),
        "kek_id": kek.kek_id,
        "wrapped": base64.b64encode(kek.wrap(master, wrap_context(repository_id))).decode(),
        "key_check": key_check,
    }
    return json.dumps(doc, sort_keys=True, indent=1).encode()


def _scrypt(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(
        passphrase.encode("utf-8"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=32,
    )


def escrow_key_file(
    master: bytes,
    repository_id: str,
    passphrase: str,
    key_check: str,
    params: ScryptParams = DEFAULT_SCRYPT,
) -> bytes:
    """A ``keys/`` object holding the master key wrapped by a passphrase (scrypt + AES-GCM)."""
    if not passphrase:
        raise KeyFileError("an escrow passphrase must not be empty")
    salt = os.urandom(32)
    wrapping = AESGCM(_scrypt(passphrase, salt, params))
    doc = {
        "format": 1,
        "kind": "escrow",
        "repository": repository_id,
        "created": utc_now(),
        "kdf": {
            "name": "scrypt",
            "n": params.n,
            "r": params.r,
            "p": params.p,
            "salt": base64.b64encode(salt).decode(),
        },
        "wrapped": base64.b64encode(seal(wrapping, master, wrap_context(repository_id))).decode(),
        "key_check": key_check,
    }
    return json.dumps(doc, sort_keys=True, indent=1).encode()


def parse_key_file(name: str, data: bytes) -> dict[str, Any]:
    """Decode a key file's JSON, checking it is named by its hash (format §2)."""
    if name.rsplit("/", 1)[-1] != hashlib.sha256(data).hexdigest():
        raise CorruptObjectError(f"{name}: content does not match its name (altered key file)")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise CorruptObjectError(f"{name}: not a JSON key file") from exc
    if (
        not isinstance(doc, dict)
        or doc.get("format") != 1
        or doc.get("kind")
        not in (
            "kek",
            "escrow",
        )
    ):
        raise CorruptObjectError(f"{name}: unknown key file format")
    return doc


def open_key_file(
    name: str,
    doc: dict[str, Any],
    repository_id: str,
    *,
    kek: KeyEncryptionKey | None = None,
    passphrase: str | None = None,
) -> RepositoryKeys:
    """Unwrap the master key from one parsed key file and check it; raise :class:`WrongKeyError`."""
    if doc.get("repository") != repository_id:
        raise KeyFileError(f"{name} belongs to repository {doc.get('repository')}, not this one")
    try:
        wrapped = base64.b64decode(doc["wrapped"], validate=True)
        if doc["kind"] == "kek":
            if kek is None:
                raise KeyFileError(f"{name} needs a KEK")
            try:
                master = kek.unwrap(wrapped, wrap_context(repository_id))
            except Exception as exc:
                raise WrongKeyError(
                    f"KEK {kek.kek_id} cannot unwrap the repository master key ({name}): "
                    "wrong KEK, or the key file was altered"
                ) from exc
        else:
            if passphrase is None:
                raise KeyFileError(f"{name} needs the escrow passphrase")
            kdf = doc["kdf"]
            if kdf.get("name") != "scrypt":
                raise CorruptObjectError(f"{name}: unknown KDF {kdf.get('name')!r}")
            params = ScryptParams(int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
            wrapping = AESGCM(_scrypt(passphrase, base64.b64decode(kdf["salt"]), params))
            try:
                master = open_sealed(wrapping, wrapped, wrap_context(repository_id))
            except CorruptObjectError as exc:
                raise WrongKeyError(
                    f"the escrow passphrase does not open the repository master key ({name})"
                ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptObjectError(f"{name}: malformed key file") from exc
    keys = RepositoryKeys(master, repository_id)
    if not hmac.compare_digest(keys.key_check, str(doc.get("key_check", ""))):
        raise WrongKeyError(f"{name}: the unwrapped master key fails its key check: wrong key")
    return keys
