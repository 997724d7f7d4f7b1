"""Key-encryption keys (KEK): what wraps the per-tenant keys stored in the database.

The database holds tenant keys only *wrapped* (encrypted) by the KEK, so a copy of the
database or of a backup is useless without it. Two providers implement
:class:`KeyEncryptionKey`:

- :class:`FileKEK`: a random AES-256 key in a local file, mode 0600 (the embedded default,
  created by ``hdsvault init``);
- :class:`hdsvault.crypto.pkcs11_kek.Pkcs11KEK`: an AES-256 key generated inside an HSM that
  never leaves it (production).

Wrapped-key format (both providers)::

    0x01 (format) || nonce (12 random bytes) || AES-256-GCM(key) || tag (16 bytes)

with the caller's ``context`` (tenant, purpose, version of the wrapped key) as associated
data, so a wrapped key copied to another tenant or purpose does not unwrap.

Key file format (:class:`FileKEK`), ASCII, recognisable by eye and by ``file``-like tools::

    hdsvault-kek v1
    <the 32-byte key in standard base64, 44 characters>

followed by an optional final newline; nothing else is accepted.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hdsvault.crypto.errors import DecryptionError, KekError

if TYPE_CHECKING:
    from hdsvault.config import KekSettings

__all__ = [
    "KEK_FILE_HEADER",
    "WRAP_FORMAT_V1",
    "FileKEK",
    "KeyEncryptionKey",
    "load_kek",
]

KEK_FILE_HEADER = "hdsvault-kek v1"
"""First line of a key file."""
WRAP_FORMAT_V1 = 0x01
"""First byte of a wrapped key."""
_KEY_SIZE = 32
_NONCE_SIZE = 12
_TAG_SIZE = 16
_MAX_KEY_FILE = 4096  # a valid file is 61 bytes; refuse to slurp anything big


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """Wraps and unwraps the per-tenant keys.

    ``kek_id`` identifies the KEK without revealing it; the keyring stores it next to every
    wrapped key, so a start-up with the wrong KEK is reported as such rather than as
    corrupted keys. ``context`` is associated data binding a wrapped key to its tenant,
    purpose and version.
    """

    @property
    def kek_id(self) -> str: ...

    def wrap(self, key: bytes, context: bytes) -> bytes:
        """Encrypt ``key`` under the KEK, bound to ``context``."""
        ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Decrypt a wrapped key; :class:`DecryptionError` if KEK, context or bytes are wrong."""
        ...


# -- the shared AES-GCM wrapping format ---------------------------------------------------------


def _check_wrapped(wrapped: bytes, kek_id: str) -> None:
    if len(wrapped) < 1 + _NONCE_SIZE + _TAG_SIZE:
        raise DecryptionError(
            f"wrapped key is {len(wrapped)} bytes, too short to be one: truncated or corrupted"
        )
    if wrapped[0] != WRAP_FORMAT_V1:
        raise DecryptionError(
            f"wrapped key has format byte 0x{wrapped[0]:02x}, expected 0x{WRAP_FORMAT_V1:02x}: "
            f"corrupted, or not wrapped by an hdsvault KEK (configured KEK: {kek_id})"
        )


def _unwrap_failed(kek_id: str) -> DecryptionError:
    return DecryptionError(
        f"key unwrap failed with KEK {kek_id}: the key was wrapped by another KEK, for another "
        "context (tenant/purpose/version), or the wrapped bytes are corrupted"
    )


# -- FileKEK ------------------------------------------------------------------------------------


class FileKEK:
    """A 32-byte random KEK kept in a local file (mode 0600, directory 0700).

    Suited to the embedded single-node set-up; the file must be backed up separately from the
    database (a backup holding both would hold the keys to everything). ``load`` refuses a file
    that group or others may access, because a KEK readable by other local accounts protects
    nothing.
    """

    __slots__ = ("_aead", "_kek_id", "path")

    def __init__(self, key: bytes, path: Path | None = None) -> None:
        if len(key) != _KEY_SIZE:
            raise KekError(f"a file KEK must be {_KEY_SIZE} bytes, got {len(key)}")
        self.path = path
        self._aead = AESGCM(bytes(key))
        digest = hashlib.sha256(b"hdsvault/kek-id" + bytes(key)).hexdigest()
        self._kek_id = "file:" + digest[:16]

    def __repr__(self) -> str:
        return f"FileKEK(kek_id={self._kek_id!r}, path={str(self.path)!r})"

    @property
    def kek_id(self) -> str:
        """``file:`` + 16 hex digits of SHA-256(b"hdsvault/kek-id" || key): names, never reveals."""
        return self._kek_id

    # -- creation and loading --------------------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> FileKEK:
        """Generate a new KEK into ``path``; refuses to overwrite an existing file.

        The parent directory is created with mode 0700 if missing. The file is written to a
        temporary name opened with ``O_CREAT | O_EXCL`` and mode 0600 (private from its first
        byte, no window where it is readable by others), fsynced, then hard-linked to ``path``
        (``link`` fails if ``path`` exists: no race can make us overwrite a key) and the
        directory fsynced. A crash leaves either no key file or a complete one.
        """
        path = Path(path)
        if path.exists() or path.is_symlink():
            raise KekError(
                f"key file {path} already exists; refusing to overwrite a key-encryption key "
                "(every stored tenant key depends on it). Move it away first if you really "
                "mean to replace it"
            )
        parent = path.parent
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KekError(f"cannot create key directory {parent}: {exc.strerror}") from None
        key = os.urandom(_KEY_SIZE)
        content = f"{KEK_FILE_HEADER}\n{base64.b64encode(key).decode('ascii')}\n".encode("ascii")
        tmp = parent / f".{path.name}.tmp-{os.urandom(6).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KekError(
                    f"key file {path} appeared while creating it (another `hdsvault init`?); "
                    "refusing to overwrite it"
                ) from None
        except OSError as exc:
            raise KekError(f"cannot write key file {path}: {exc.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(parent)
        return cls(key, path)

    @classmethod
    def load(cls, path: Path) -> FileKEK:
        """Read the KEK from ``path``, refusing anything unsafe or malformed.

        Raises :class:`KekError`, with the fix in the message, when the file is missing, not a
        regular file, accessible by group or others (any bit of 0o077), unreadable, or not in
        the key-file format. The message never echoes the file's content.
        """
        path = Path(path)
        try:
            # O_NONBLOCK: opening a FIFO planted at the path must not hang start-up.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise KekError(
                f"no key file at {path}: run `hdsvault init` or set kek.file.path"
            ) from None
        except PermissionError:
            raise KekError(
                f"cannot read key file {path}: permission denied; run hdsvault as the account "
                "that owns the file"
            ) from None
        except OSError as exc:
            raise KekError(f"cannot open key file {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)  # the opened file itself: no check-then-open race
            if not stat.S_ISREG(st.st_mode):
                raise KekError(
                    f"{path} is not a regular file ({_file_kind(st.st_mode)}); point "
                    "kek.file.path at the key file created by `hdsvault init`"
                )
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                raise KekError(
                    f"key file {path} is {_exposure(mode)} by group/others (mode {mode:04o}); "
                    f"run: chmod 600 {path}"
                )
            data = _read_limited(fd, _MAX_KEY_FILE + 1)
        except OSError as exc:
            raise KekError(f"cannot read key file {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        return cls(_parse_key_file(data, path), path)

    # -- wrapping ---------------------------------------------------------------------------

    def wrap(self, key: bytes, context: bytes) -> bytes:
        """AES-256-GCM under the KEK, random nonce, ``context`` as associated data."""
        nonce = os.urandom(_NONCE_SIZE)
        return b"".join((bytes((WRAP_FORMAT_V1,)), nonce, self._aead.encrypt(nonce, key, context)))

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Inverse of :meth:`wrap`; :class:`DecryptionError` on any mismatch or damage."""
        _check_wrapped(wrapped, self._kek_id)
        view = memoryview(wrapped)
        try:
            return self._aead.decrypt(view[1 : 1 + _NONCE_SIZE], view[1 + _NONCE_SIZE :], context)
        except InvalidTag:
            raise _unwrap_failed(self._kek_id) from None

    def close(self) -> None:
        """Nothing to release (present so that callers can close any KEK alike)."""

    def __enter__(self) -> FileKEK:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_limited(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(fd, limit - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _parse_key_file(data: bytes, path: Path) -> bytes:
    restore = "restore it from your key backup, or point kek.file.path at the right file"
    if len(data) > _MAX_KEY_FILE:
        raise KekError(f"key file {path} is larger than any hdsvault key file; {restore}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KekError(
            f"key file {path} is not an hdsvault key file (not ASCII); {restore}"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    if not lines or lines[0].rstrip("\r") != KEK_FILE_HEADER:
        raise KekError(
            f"key file {path} is not an hdsvault key file (its first line is not "
            f"{KEK_FILE_HEADER!r}); {restore}"
        )
    if len(lines) != 2:
        raise KekError(
            f"key file {path} must have exactly 2 lines ({KEK_FILE_HEADER!r}, then the base64 "
            f"key), it has {len(lines)}; {restore}"
        )
    try:
        key = base64.b64decode(lines[1].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KekError(f"key file {path}: the key line is not valid base64; {restore}") from None
    if len(key) != _KEY_SIZE:
        raise KekError(
            f"key file {path} holds a {len(key)}-byte key, expected {_KEY_SIZE}; {restore}"
        )
    return key


def _exposure(mode: int) -> str:
    if mode & 0o044:
        return "readable"
    if mode & 0o022:
        return "writable"
    return "accessible"


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"it is {name}"
    return "unknown file type"


def _fsync_dir(directory: Path) -> None:
    """Make the new directory entry durable (best effort where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories: that is fine
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise KekError(f"cannot fsync key directory {directory}: {exc.strerror}") from None
    finally:
        os.close(fd)


# -- factory -------------------------------------------------------------------------------------


def load_kek(settings: KekSettings, kek_file: Path) -> KeyEncryptionKey:
    """Open the configured KEK provider (called once at start).

    ``kek_file`` is the resolved key-file location (``Settings.kek_file``), used by the
    ``file`` provider. The PKCS#11 module is imported only for the ``pkcs11`` provider, so
    file-based set-ups never load python-pkcs11.
    """
    if settings.provider == "file":
        return FileKEK.load(kek_file)
    if settings.provider == "pkcs11":
        p = settings.pkcs11
        if p is None:
            raise KekError(
                "kek.provider is 'pkcs11' but there is no [kek.pkcs11] section "
                "(module, token_label, key_label, pin)"
            )
        from hdsvault.crypto.pkcs11_kek import Pkcs11KEK

        return Pkcs11KEK(p.module, p.token_label, p.pin.get_secret_value(), p.key_label)
    raise KekError(f"unknown kek.provider {settings.provider!r}: use 'file' or 'pkcs11'")
