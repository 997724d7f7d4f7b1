"""The index is a cache of the pack headers: losing or corrupting it loses nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from backupkit import flip_byte, write_tree

from hdsvault.backup import BackupRepository, ProblemKind, RestoreError
from hdsvault.crypto.kek import FileKEK


def _fresh(repo: BackupRepository, kek: FileKEK) -> BackupRepository:
    """The same repository opened anew, as another process would (index reloaded)."""
    return BackupRepository.open(repo.backend, kek=kek, signing_key=repo.signing_key)


def test_deleted_index_is_rebuilt_from_packs(
    repo: BackupRepository, kek: FileKEK, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write_tree(src)
    snap = repo.backup([src])
    root = repo.backend.root  # type: ignore[attr-defined]
    for name in repo.backend.list("index"):
        os.remove(root / name)

    lost = _fresh(repo, kek)
    with pytest.raises(RestoreError, match="restore refused"):
        lost.restore(snap.id, tmp_path / "out")
    report = lost.verify()
    assert report.of_kind(ProblemKind.CHUNK_NOT_INDEXED)
    assert report.of_kind(ProblemKind.PACK_UNINDEXED)

    rebuilt = lost.rebuild_index()
    assert rebuilt.unreadable_packs == [] and rebuilt.packs_indexed == len(
        repo.backend.list("data")
    )
    lost.restore(snap.id, tmp_path / "out")
    assert (tmp_path / "out/src/imaging/series1/large.bin").read_bytes() == (
        src / "imaging/series1/large.bin"
    ).read_bytes()
    assert _fresh(repo, kek).verify(read_data=True).ok


def test_corrupt_index_file_is_named_and_replaced(
    repo: BackupRepository, kek: FileKEK, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write_tree(src)
    repo.backup([src])
    [name] = repo.backend.list("index")
    flip_byte(repo.backend.root / name, 50)  # type: ignore[attr-defined]
    report = repo.verify()
    assert [p.subject for p in report.of_kind(ProblemKind.INDEX_UNREADABLE)] == [name]
    result = repo.rebuild_index()
    assert result.index_deleted == [name]
    assert _fresh(repo, kek).verify(read_data=True).ok
