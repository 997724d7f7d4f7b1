"""The local storage backend and the writer lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hdsvault.backup import (
    BackupRepository,
    LocalRepository,
    ObjectExistsError,
    ObjectMissingError,
    RepositoryLockedError,
)


def test_put_is_create_only_and_atomic(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path)
    repo.put("data/ab/abc", b"hello world")
    assert repo.get("data/ab/abc") == b"hello world"
    assert repo.get_range("data/ab/abc", 6, 5) == b"world"
    assert repo.size("data/ab/abc") == 11
    with pytest.raises(ObjectExistsError):
        repo.put("data/ab/abc", b"other")
    assert repo.get("data/ab/abc") == b"hello world"
    assert repo.list("data") == ["data/ab/abc"]
    assert not [n for n in os.listdir(tmp_path / "data/ab") if n.startswith(".tmp")]
    assert os.stat(tmp_path / "data/ab/abc").st_mode & 0o077 == 0
    repo.delete("data/ab/abc")
    with pytest.raises(ObjectMissingError, match="data/ab/abc is missing"):
        repo.get("data/ab/abc")
    with pytest.raises(ValueError):
        repo.put("../escape", b"x")


def test_writer_lock_excludes_a_second_writer(repo: BackupRepository, tmp_path: Path) -> None:
    with repo.lock("test"), pytest.raises(RepositoryLockedError, match='"operation": "test"'):
        repo.backup([tmp_path])
    assert not repo.backend.exists("locks/exclusive")
    with repo.lock("crashed"):
        pass
    repo.backend.put("locks/exclusive", b"{}")  # a crashed writer's leftover
    assert repo.break_lock()
    assert not repo.break_lock()
