"""Errors of the backup engine.

Every message names the object (pack, snapshot, key file, path) and says what to do, and never
contains key material or plaintext: backup errors end up in operator logs (invariant 3).
"""

from __future__ import annotations

__all__ = [
    "BackupError",
    "CorruptObjectError",
    "KeyFileError",
    "ObjectExistsError",
    "ObjectLockedError",
    "ObjectMissingError",
    "RepositoryFormatError",
    "RepositoryLockedError",
    "RestoreError",
    "WrongKeyError",
]


class BackupError(Exception):
    """Base class of every error raised by :mod:`hdsvault.backup`."""


class RepositoryFormatError(BackupError):
    """The repository is not an hdsvault backup repository, or of an unknown format version."""


class ObjectMissingError(BackupError, KeyError):
    """A named object is not in the storage backend."""

    def __str__(self) -> str:  # KeyError would print the repr of the argument
        return str(self.args[0]) if self.args else "object missing"


class ObjectExistsError(BackupError):
    """``put`` of a name that already exists: objects are write-once."""


class ObjectLockedError(BackupError):
    """The backend refuses to delete an object that is immutable (retention not expired)."""


class CorruptObjectError(BackupError):
    """An object does not open, does not parse, or does not match its name or chunk ID."""


class KeyFileError(BackupError):
    """No usable key file: none for this KEK, none for a passphrase, or a malformed one."""


class WrongKeyError(KeyFileError):
    """The KEK or the escrow passphrase does not open the repository master key."""


class RepositoryLockedError(BackupError):
    """Another writer holds ``locks/exclusive``."""


class RestoreError(BackupError):
    """A restore was refused: some data needed is missing or corrupt (and salvage is off)."""
