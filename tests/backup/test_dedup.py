"""Deduplication: unchanged data costs nothing, a small change costs about its size."""

from __future__ import annotations

import random
from pathlib import Path

from backupkit import write_tree

from hdsvault.backup import BackupRepository


def test_second_backup_writes_no_pack(repo: BackupRepository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    repo.backup([src])
    packs = repo.backend.list("data")
    again = repo.backup([src])
    assert again.stats["packs_written"] == 0 and again.stats["new_chunks"] == 0
    assert again.stats["unchanged_files"] == again.stats["files"]  # not even read
    reread = repo.backup([src], reread=True)  # read everything: content dedup alone
    assert reread.stats["packs_written"] == 0 and reread.stats["unchanged_files"] == 0
    assert repo.backend.list("data") == packs
    assert reread.manifest.tree == again.manifest.tree


def test_one_percent_change_writes_about_one_percent(
    repo: BackupRepository, tmp_path: Path
) -> None:
    rng = random.Random(7)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"f{i}.bin").write_bytes(rng.randbytes(256 * 1024))
    total = 8 * 256 * 1024
    first = repo.backup([src])
    assert first.stats["new_bytes"] >= total

    # change 1 % of the bytes: 20 KiB overwritten in one file, in place
    with open(src / "f3.bin", "r+b") as f:
        f.seek(100_000)
        f.write(rng.randbytes(total // 100))
    second = repo.backup([src])
    data_new = second.stats["new_bytes"]
    # the changed 20 KiB plus at most the two chunks straddling its edges (max 16 KiB each)
    assert data_new < 0.03 * total, data_new
    assert 0 < second.stats["new_tree_bytes"] < 0.03 * total  # the one changed directory
    assert second.stats["unchanged_files"] == 7


def test_insertion_shifts_do_not_defeat_dedup(repo: BackupRepository, tmp_path: Path) -> None:
    rng = random.Random(3)
    src = tmp_path / "src"
    src.mkdir()
    body = rng.randbytes(512 * 1024)
    (src / "doc.bin").write_bytes(body)
    repo.backup([src])
    (src / "doc.bin").write_bytes(body[:200_000] + b"inserted!" * 10 + body[200_000:])
    snap = repo.backup([src])
    assert snap.stats["new_bytes"] < 0.05 * len(body)
