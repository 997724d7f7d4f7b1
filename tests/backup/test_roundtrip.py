"""Backup then restore gives back the same bytes, names, links, modes and times."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from backupkit import MARKER, write_tree

from hdsvault.backup import BackupError, BackupRepository, RestoreError


def _tree_state(root: Path) -> dict[bytes, tuple[str, object, int, int]]:
    """Everything restore must reproduce: type, content or link target, mode, mtime."""
    state: dict[bytes, tuple[str, object, int, int]] = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, broot)
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(path), 0, st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", None, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                with open(path, "rb") as f:
                    state[rel] = ("file", f.read(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return state


def test_round_trip_is_byte_identical(repo: BackupRepository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    before = _tree_state(src)
    snap = repo.backup([src], tags=["daily"])
    assert snap.stats["files"] == 8 and snap.stats["symlinks"] == 2
    assert snap.tags == ["daily"] and snap.paths == [str(src)]

    result = repo.restore(snap.id, tmp_path / "out")
    assert result.broken == [] and result.files == 8
    assert _tree_state(tmp_path / "out" / "src") == before
    assert repo.verify(read_data=True, last_seen_seq=1).ok


def test_several_paths_and_a_single_file(repo: BackupRepository, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b.txt"
    write_tree(a)
    b.write_bytes(MARKER * 10)
    snap = repo.backup([a, b])
    repo.restore("latest", tmp_path / "out")
    assert (tmp_path / "out" / "b.txt").read_bytes() == MARKER * 10
    assert _tree_state(tmp_path / "out" / "a") == _tree_state(a)
    assert repo.snapshot(snap.id[:10]).id == snap.id


def test_special_files_are_skipped_and_listed(repo: BackupRepository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    os.mkfifo(src / "fifo")
    snap = repo.backup([src])
    assert [s["path"] for s in snap.stats["skipped"]] == [str(src / "fifo")]
    repo.restore(snap.id, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out" / "src")) == ["f"]


def test_restore_refuses_a_non_empty_target(repo: BackupRepository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    snap = repo.backup([src])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(RestoreError, match="not an empty directory"):
        repo.restore(snap.id, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    repo.restore(snap.id, tmp_path / "empty")  # an empty directory is fine
    assert (tmp_path / "empty" / "src" / "deep/a/b/c/d/leaf.txt").read_bytes() == b"leaf\n"


def test_bad_input_gets_clear_errors(repo: BackupRepository, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="does not exist"):
        repo.backup([tmp_path / "nope"])
    with pytest.raises(BackupError, match="same last component"):
        (tmp_path / "x" / "d").mkdir(parents=True)
        (tmp_path / "y" / "d").mkdir(parents=True)
        repo.backup([tmp_path / "x" / "d", tmp_path / "y" / "d"])
    with pytest.raises(BackupError, match="no valid snapshot"):
        repo.restore("deadbeef", tmp_path / "out")


def test_progress_reports_bytes(repo: BackupRepository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = write_tree(src)
    seen: list[tuple[int, int]] = []
    snap = repo.backup([src], progress=lambda done, total: seen.append((done, total)))
    total = sum(len(v) for v in files.values()) + len(b"non-utf8 name")
    assert seen[-1] == (total, total)
    seen.clear()
    repo.restore(snap.id, tmp_path / "out", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (total, total)
