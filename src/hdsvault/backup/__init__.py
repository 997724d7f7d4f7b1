"""Encrypted, deduplicating, verifiable backups (the backup service of issue 6).

A content-addressed repository in the manner of restic (packs, index, snapshots) with keyed
chunk IDs (borg 2), AES-256-GCM everywhere, Ed25519-signed and chained manifests, and a verify
that names exactly what is broken. The format is specified in ``docs/backup-format.md``; this
package is its reference implementation.

Modules, one concept each: :mod:`.repository` (storage backends), :mod:`.config`,
:mod:`.keys` (master key wrapping, derivation), :mod:`.crypto` (sealing, blob codec),
:mod:`.chunker` (FastCDC), :mod:`.pack`, :mod:`.index`, :mod:`.tree`, :mod:`.manifest`,
:mod:`.store` (blob reads/writes), :mod:`.snapshot` (backup, restore), :mod:`.verify`,
:mod:`.forget` (retention, prune), :mod:`.engine` (the :class:`BackupRepository` facade),
:mod:`.worm` (the hardened, immutable local backend), :mod:`.s3` (S3 Object Lock backend).

Platform level (``docs/backup.md``): :mod:`.platform_snapshot` (consistent copy of database,
checkpoints, configuration; restore as a platform), :mod:`.service` (backups of a running
platform, journaled, witnessed by the journal), :mod:`.offline` (exports to removable media),
:mod:`.inventory` (media inventory, verification log), :mod:`.status` (3-2-1-1-0),
:mod:`.drill` (restore drills with a measured RTO and a signed report), :mod:`.schedule`.
"""

from hdsvault.backup.config import ChunkerParams, RepositoryConfig
from hdsvault.backup.engine import BackupRepository, ForgetResult, RebuildResult
from hdsvault.backup.errors import (
    BackupError,
    CorruptObjectError,
    KeyFileError,
    ObjectExistsError,
    ObjectLockedError,
    ObjectMissingError,
    RepositoryFormatError,
    RepositoryLockedError,
    RestoreError,
    WrongKeyError,
)
from hdsvault.backup.forget import PruneResult, RetentionPolicy
from hdsvault.backup.keys import KeyEncryptionKey, ScryptParams
from hdsvault.backup.repository import LocalRepository, RepositoryBackend
from hdsvault.backup.snapshot import BrokenFile, RestoreResult, Snapshot
from hdsvault.backup.verify import Affected, Problem, ProblemKind, VerifyReport
from hdsvault.backup.worm import HardenedLocalRepository

__all__ = [
    "Affected",
    "BackupError",
    "BackupRepository",
    "BrokenFile",
    "ChunkerParams",
    "CorruptObjectError",
    "ForgetResult",
    "HardenedLocalRepository",
    "KeyEncryptionKey",
    "KeyFileError",
    "LocalRepository",
    "ObjectExistsError",
    "ObjectLockedError",
    "ObjectMissingError",
    "Problem",
    "ProblemKind",
    "PruneResult",
    "RebuildResult",
    "RepositoryBackend",
    "RepositoryConfig",
    "RepositoryFormatError",
    "RepositoryLockedError",
    "RestoreError",
    "RestoreResult",
    "RetentionPolicy",
    "ScryptParams",
    "Snapshot",
    "VerifyReport",
    "WrongKeyError",
]
