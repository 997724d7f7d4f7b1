"""Who can open a repository, and what an operator of the storage can see (nothing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from backupkit import ESCROW, FAST_SCRYPT, MARKER, write_tree
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hdsvault.backup import (
    BackupRepository,
    LocalRepository,
    RepositoryFormatError,
    WrongKeyError,
)
from hdsvault.crypto.kek import FileKEK


def test_wrong_kek_gets_a_clear_error(repo: BackupRepository, tmp_path: Path) -> None:
    other = FileKEK(os.urandom(32))
    with pytest.raises(WrongKeyError, match=f"not wrapped by KEK {other.kek_id}"):
        BackupRepository.open(repo.backend, kek=other)


class _Impostor:
    """A KEK claiming the right id but holding another key (or a broken HSM session)."""

    def __init__(self, kek_id: str) -> None:
        self.kek_id = kek_id
        self._real = FileKEK(os.urandom(32))

    def wrap(self, key: bytes, context: bytes) -> bytes:
        return self._real.wrap(key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self._real.unwrap(wrapped, context)


def test_kek_with_the_right_id_but_wrong_key(repo: BackupRepository, kek: FileKEK) -> None:
    with pytest.raises(WrongKeyError, match="cannot unwrap the repository master key"):
        BackupRepository.open(repo.backend, kek=_Impostor(kek.kek_id))


def test_escrow_passphrase_opens_without_the_kek(
    repo: BackupRepository, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write_tree(src)
    snap = repo.backup([src])
    # Another site: the storage (copied) and the passphrase, no KEK, the platform's public key.
    other_site = LocalRepository(repo.backend.root)  # type: ignore[attr-defined]
    opened = BackupRepository.open(
        other_site, passphrase=ESCROW, trusted_keys=[signing_key.public_key()]
    )
    assert [s.id for s in opened.snapshots()] == [snap.id]
    opened.restore(snap.id, tmp_path / "out")
    assert (tmp_path / "out/src/deep/a/b/c/d/leaf.txt").read_bytes() == b"leaf\n"
    assert opened.verify(read_data=True, last_seen_seq=1).ok
    with pytest.raises(WrongKeyError, match="passphrase does not open"):
        BackupRepository.open(other_site, passphrase="not the passphrase")


def test_escrow_can_be_added_later(repo: BackupRepository) -> None:
    repo.add_escrow("second passphrase", FAST_SCRYPT)
    assert BackupRepository.open(repo.backend, passphrase="second passphrase").id == repo.id
    assert BackupRepository.open(repo.backend, passphrase=ESCROW).id == repo.id


def test_escrow_key_file_documents_its_kdf(repo: BackupRepository) -> None:
    docs = [json.loads(repo.backend.get(n)) for n in repo.backend.list("keys")]
    escrow = next(d for d in docs if d["kind"] == "escrow")
    assert escrow["kdf"] == {**escrow["kdf"], "name": "scrypt", "n": 1024, "r": 8, "p": 1}
    assert {d["kind"] for d in docs} == {"kek", "escrow"}


def test_no_plaintext_reaches_the_repository(repo: BackupRepository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    (src / "notes" / "another-name-患者-dossier.txt").write_bytes(MARKER * 50)
    repo.backup([src], tags=["t"])
    needles = [MARKER, b"Compte-rendu", "患者".encode(), b"leaf.txt", b"Donn"]
    for dirpath, _dirs, files in os.walk(repo.backend.root):  # type: ignore[attr-defined]
        for name in files:
            data = Path(dirpath, name).read_bytes()
            for needle in needles:
                assert needle not in data, f"{needle!r} in {name}"


def test_chunk_ids_are_keyed_per_repository(make_repo: object, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    a = make_repo("a")  # type: ignore[operator]
    b = make_repo("b")  # type: ignore[operator]
    a.backup([src])
    b.backup([src])
    assert set(a.store.index.locations).isdisjoint(b.store.index.locations)


def test_not_a_repository_and_unknown_format(tmp_path: Path, kek: FileKEK) -> None:
    empty = LocalRepository(tmp_path / "nothing")
    with pytest.raises(RepositoryFormatError, match="no backup repository"):
        BackupRepository.open(empty, kek=kek)
    future = LocalRepository(tmp_path / "future")
    future.put("config", json.dumps({"format": 2, "id": "00" * 32}).encode())
    with pytest.raises(RepositoryFormatError, match="format 2 is not supported"):
        BackupRepository.open(future, kek=kek)


def test_init_refuses_an_existing_repository(repo: BackupRepository, kek: FileKEK) -> None:
    with pytest.raises(RepositoryFormatError, match="already holds a repository"):
        BackupRepository.init(repo.backend, kek=kek)
