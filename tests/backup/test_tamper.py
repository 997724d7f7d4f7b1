"""Tampering is detected and named: which pack, which snapshot, which files, which manifest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from backupkit import flip_byte, write_tree

from hdsvault.backup import BackupRepository, ProblemKind, RestoreError, Snapshot
from hdsvault.backup.pack import pack_name
from hdsvault.backup.tree import DIR, decode_tree

TEXT = "notes/Compte-rendu é à ü 患者.txt"


def file_chunks(repo: BackupRepository, snap: Snapshot, rel: str) -> list[bytes]:
    """The chunk IDs of one file of a snapshot (``rel`` below the backed-up directory)."""
    tree = bytes.fromhex(snap.manifest.tree)
    parts = [os.path.basename(snap.paths[0]), *rel.split("/")]
    for name in parts[:-1]:
        node = next(n for n in decode_tree(repo.store.load(tree), "t") if n.display_name == name)
        assert node.type == DIR and node.subtree is not None
        tree = node.subtree
    node = next(n for n in decode_tree(repo.store.load(tree), "t") if n.display_name == parts[-1])
    return node.chunks


def repo_path(repo: BackupRepository) -> Path:
    return repo.backend.root  # type: ignore[attr-defined, no-any-return]


@pytest.fixture
def two_snapshots(repo: BackupRepository, tmp_path: Path) -> tuple[Snapshot, Snapshot]:
    src = tmp_path / "src"
    write_tree(src)
    first = repo.backup([src])
    (src / "imaging/series2/new.bin").write_bytes(os.urandom(10_000))
    second = repo.backup([src])
    return first, second


def test_flipped_byte_in_a_pack_is_named_with_its_files(
    repo: BackupRepository, two_snapshots: tuple[Snapshot, Snapshot], tmp_path: Path
) -> None:
    first, second = two_snapshots
    chunk = file_chunks(repo, second, TEXT)[0]
    loc = repo.store.index.get(chunk)
    assert loc is not None
    flip_byte(repo_path(repo) / pack_name(loc.pack_id), loc.offset + 20)

    assert repo.verify(read_data=False).ok  # metadata alone cannot see a flipped data byte
    report = repo.verify(read_data=True, last_seen_seq=2)
    assert not report.ok
    [problem] = report.errors
    assert problem.kind == ProblemKind.PACK_CORRUPT
    assert problem.subject == pack_name(loc.pack_id)
    assert "SHA-256 of the pack does not match its name" in problem.detail
    assert chunk.hex() in problem.chunks
    expected = f"/src/{TEXT}"
    assert {(a.snapshot, a.path) for a in problem.affected} >= {
        (first.id, expected),
        (second.id, expected),
    }
    assert report.affected_snapshots == {first.id, second.id}
    assert problem.subject in report.summary()


def test_restore_refuses_corrupt_data_unless_salvage(
    repo: BackupRepository, two_snapshots: tuple[Snapshot, Snapshot], tmp_path: Path
) -> None:
    _, snap = two_snapshots
    chunk = file_chunks(repo, snap, TEXT)[-1]
    loc = repo.store.index.get(chunk)
    assert loc is not None
    flip_byte(repo_path(repo) / pack_name(loc.pack_id), loc.offset + loc.length - 1)

    target = tmp_path / "out"
    with pytest.raises(RestoreError, match="Compte-rendu") as err:
        repo.restore(snap.id, target)
    assert "authentication failed" in str(err.value)
    assert not target.exists()  # all-or-nothing: nothing half-restored is left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.restoring")]

    result = repo.restore(snap.id, target, salvage=True)
    broken = {b.path for b in result.broken}
    assert f"src/{TEXT}" in broken
    assert all(b.pack == pack_name(loc.pack_id) for b in result.broken)
    assert not (target / "src" / TEXT).exists()  # a broken file is never written
    assert (target / "src/deep/a/b/c/d/leaf.txt").read_bytes() == b"leaf\n"
    assert result.files == 9 - len(broken)


def test_deleted_pack_is_named_by_metadata_check(
    repo: BackupRepository, two_snapshots: tuple[Snapshot, Snapshot], tmp_path: Path
) -> None:
    _, snap = two_snapshots
    chunk = file_chunks(repo, snap, "imaging/series1/large.bin")[3]
    loc = repo.store.index.get(chunk)
    assert loc is not None
    name = pack_name(loc.pack_id)
    os.remove(repo_path(repo) / name)

    report = repo.verify(read_data=False)
    missing = report.of_kind(ProblemKind.PACK_MISSING)
    assert [p.subject for p in missing] == [name]
    assert chunk.hex() in missing[0].chunks
    assert any(a.path == "/src/imaging/series1/large.bin" for a in missing[0].affected)

    with pytest.raises(RestoreError, match="pack missing"):
        repo.restore(snap.id, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    result = repo.restore(snap.id, tmp_path / "out", salvage=True)
    assert "src/imaging/series1/large.bin" in {b.path for b in result.broken}


def test_altered_manifest_is_named(
    repo: BackupRepository, two_snapshots: tuple[Snapshot, Snapshot]
) -> None:
    first, second = two_snapshots
    flip_byte(repo_path(repo) / "snapshots" / second.id, 40)
    report = repo.verify()
    altered = report.of_kind(ProblemKind.MANIFEST_ALTERED)
    assert [p.subject for p in altered] == [f"snapshots/{second.id}"]
    assert [s.id for s in repo.snapshots()] == [first.id]  # the altered one is not offered


def test_replayed_old_manifest_is_detected(
    repo: BackupRepository, two_snapshots: tuple[Snapshot, Snapshot], tmp_path: Path
) -> None:
    first, second = two_snapshots
    snapdir = repo_path(repo) / "snapshots"
    # 1. the old manifest copied under a new name, to pose as the newest
    fake = "f" * 64
    shutil.copy(snapdir / first.id, snapdir / fake)
    report = repo.verify(last_seen_seq=2)
    [replayed] = report.of_kind(ProblemKind.MANIFEST_REPLAYED)
    assert replayed.subject == f"snapshots/{fake}"
    assert f"copy of snapshots/{first.id}" in replayed.detail
    # 2. and with the newest deleted: the repository is rolled back to seq 1
    os.remove(snapdir / second.id)
    report = repo.verify(last_seen_seq=2)
    kinds = {p.kind for p in report.errors}
    assert {ProblemKind.ROLLBACK, ProblemKind.MANIFEST_REPLAYED} <= kinds
    [rollback] = report.of_kind(ProblemKind.ROLLBACK)
    assert "seq 1" in rollback.detail and "seq 2" in rollback.detail
    os.remove(snapdir / fake)
    assert not repo.verify(last_seen_seq=2).ok  # plain rollback, no copy: still caught
    assert repo.verify(last_seen_seq=1).ok


def test_deleted_middle_snapshot_breaks_the_chain(
    repo: BackupRepository, two_snapshots: tuple[Snapshot, Snapshot], tmp_path: Path
) -> None:
    _first, second = two_snapshots
    third = repo.backup([tmp_path / "src"])
    os.remove(repo_path(repo) / "snapshots" / second.id)
    report = repo.verify(last_seen_seq=3)
    [missing] = report.of_kind(ProblemKind.SNAPSHOT_MISSING)
    assert "seq 2" in missing.detail and third.id in missing.subject


def test_manifest_signed_by_an_untrusted_key_is_rejected(
    repo: BackupRepository, two_snapshots: tuple[Snapshot, Snapshot], kek: object, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    intruder = BackupRepository.open(
        repo.backend,
        kek=kek,
        signing_key=Ed25519PrivateKey.generate(),  # type: ignore[arg-type]
    )
    forged = intruder.backup([tmp_path / "src"])
    report = repo.verify()
    [bad] = report.of_kind(ProblemKind.MANIFEST_SIGNATURE)
    assert bad.subject == f"snapshots/{forged.id}" and "not trusted" in bad.detail
    assert forged.id not in {s.id for s in repo.snapshots()}


def test_sampled_read_data_reads_a_fraction(
    repo: BackupRepository, two_snapshots: tuple[Snapshot, Snapshot]
) -> None:
    full = repo.verify(read_data=True)
    half = repo.verify(read_data=0.5)
    assert full.ok and half.ok
    assert half.packs_read == -(-full.packs_read // 2)
