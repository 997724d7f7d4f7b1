"""Fixtures of the backup tests: a KEK, a platform signing key, small-chunk repositories.

Parameters and the test tree live in ``backupkit.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hdsvault.backup import BackupRepository, LocalRepository
from hdsvault.crypto.kek import FileKEK

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backupkit import ESCROW, FAST_SCRYPT, SMALL_CHUNKS


@pytest.fixture
def kek() -> FileKEK:
    return FileKEK(os.urandom(32))


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


RepoFactory = Callable[..., BackupRepository]


@pytest.fixture
def make_repo(tmp_path: Path, kek: FileKEK, signing_key: Ed25519PrivateKey) -> RepoFactory:
    def make(name: str = "repo", backend: LocalRepository | None = None) -> BackupRepository:
        return BackupRepository.init(
            backend or LocalRepository(tmp_path / name, durable=False),
            kek=kek,
            escrow_passphrase=ESCROW,
            scrypt=FAST_SCRYPT,
            chunker=SMALL_CHUNKS,
            pack_size=64 * 1024,
            signing_key=signing_key,
        )

    return make


@pytest.fixture
def repo(make_repo: RepoFactory) -> BackupRepository:
    return make_repo()
