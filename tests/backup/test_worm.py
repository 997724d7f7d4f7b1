"""The hardened local repository: objects immutable until their retention date (as root)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from backupkit import write_tree

from hdsvault.backup import BackupRepository, ObjectLockedError, RetentionPolicy
from hdsvault.backup.worm import (
    FS_APPEND_FL,
    FS_IMMUTABLE_FL,
    HardenedLocalRepository,
    get_flags,
    immutability_problem,
    set_flags,
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _release(root: Path) -> None:
    """Clear +i/+a below ``root`` so pytest can remove the temporary directory."""
    if not root.exists():
        return
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            if not path.is_symlink():
                set_flags(path, remove=FS_IMMUTABLE_FL | FS_APPEND_FL)
    set_flags(root, remove=FS_IMMUTABLE_FL | FS_APPEND_FL)


@pytest.fixture
def worm_root(tmp_path: Path) -> Iterator[Path]:
    problem = immutability_problem(tmp_path)
    if problem is not None:
        pytest.skip(problem)
    root = tmp_path / "worm"
    yield root
    _release(root)


def test_objects_are_immutable_until_retention(worm_root: Path) -> None:
    clock = Clock()
    repo = HardenedLocalRepository(worm_root, timedelta(days=30), durable=False, clock=clock)
    repo.put("data/ab/abcdef", b"pack bytes")
    path = worm_root / "data/ab/abcdef"
    assert get_flags(path) & FS_IMMUTABLE_FL
    assert get_flags(worm_root / "data/ab") & FS_APPEND_FL

    # even root's plain unlink, rename and overwrite fail: the kernel refuses (EPERM)
    with pytest.raises(PermissionError) as exc:
        os.remove(path)
    assert exc.value.errno == errno.EPERM
    with pytest.raises(PermissionError), open(path, "r+b"):
        pass
    with pytest.raises(PermissionError):
        os.rename(worm_root / "data/ab", worm_root / "data/hidden")
    assert repo.is_locked("data/ab/abcdef")
    with pytest.raises(ObjectLockedError, match="immutable until 2026-01-31"):
        repo.delete("data/ab/abcdef")
    assert repo.get("data/ab/abcdef") == b"pack bytes"

    clock.now += timedelta(days=31)
    assert not repo.is_locked("data/ab/abcdef")
    repo.delete("data/ab/abcdef")
    assert not path.exists() and repo.list("data") == []
    assert repo.retain_until("data/ab/abcdef") is None


def test_a_whole_repository_on_worm_storage(worm_root: Path, kek: object, tmp_path: Path) -> None:
    from backupkit import SMALL_CHUNKS
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    clock = Clock()
    backend = HardenedLocalRepository(worm_root, timedelta(days=7), durable=False, clock=clock)
    repo = BackupRepository.init(
        backend,
        kek=kek,  # type: ignore[arg-type]
        chunker=SMALL_CHUNKS,
        pack_size=64 * 1024,
        signing_key=Ed25519PrivateKey.generate(),
    )
    src = tmp_path / "src"
    write_tree(src)
    first = repo.backup([src])
    (src / "imaging").rename(tmp_path / "gone")
    repo.backup([src])
    packs = backend.list("data")

    result = repo.forget(RetentionPolicy(keep_last=1))  # within retention: nothing goes
    assert result.locked == [first.id] and result.removed == []
    assert repo.prune().packs_deleted == []
    assert backend.list("data") == packs
    assert repo.verify(read_data=True, last_seen_seq=2).ok

    clock.now += timedelta(days=8)  # retention over: forget and prune may now delete
    assert repo.forget(RetentionPolicy(keep_last=1)).removed == [first.id]
    pruned = repo.prune()
    assert pruned.packs_deleted and len(backend.list("data")) < len(packs)
    report = repo.verify(read_data=True, last_seen_seq=3)
    assert report.ok, report.summary()
    repo.restore("latest", tmp_path / "out")
