"""A stranger's reader, written from docs/backup-format.md alone, reads what the engine wrote.

Nothing from ``hdsvault.backup`` is used below except to *write* the repository: this reader
uses only the KEK (to unwrap the master key, §4) and standard primitives, following §12's
"reading a file, step by step". If the document and the code drift apart, this test fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import struct
from pathlib import Path

import zstandard
from backupkit import write_tree
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hdsvault.backup import BackupRepository
from hdsvault.backup.manifest import merkle_root
from hdsvault.crypto.kek import FileKEK


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:  # §1.1
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)


def _derive(mk: bytes, repo_id: str, purpose: str) -> bytes:  # §5
    info = f"hdsvault/backup/v1/{purpose}".encode()
    return HKDF(hashes.SHA256(), 32, bytes.fromhex(repo_id), info).derive(mk)


def _mth(leaves: list[bytes]) -> bytes:  # §8.5, the recursive definition
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def test_a_reader_from_the_document_alone(
    repo: BackupRepository, kek: FileKEK, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = write_tree(src)
    snap = repo.backup([src])
    root = Path(repo.backend.root)  # type: ignore[attr-defined]

    # 1. config
    config = json.loads((root / "config").read_bytes())
    assert config["format"] == 1
    rid = config["id"]
    # 2. master key from the kek key file, key check, working keys
    for path in (root / "keys").iterdir():
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == path.name
        doc = json.loads(data)
        if doc["kind"] == "kek":
            context = b"hdsvault/backup/v1/master-key\x00" + rid.encode()
            mk = kek.unwrap(base64.b64decode(doc["wrapped"]), context)
    k = {
        p: _derive(mk, rid, p)
        for p in ("chunk-id", "blob", "pack-header", "index", "manifest", "key-check")
    }
    check = hmac.digest(k["key-check"], b"hdsvault/backup/v1/key-check", "sha256")
    assert check.hex() == doc["key_check"]
    # 3. index
    index: dict[bytes, tuple[bytes, int, int, int, int, int]] = {}
    for path in (root / "index").iterdir():
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == path.name
        plain = _open(k["index"], data, b"hdsvault/backup/v1/index")
        assert plain[0] == 1
        (n_sup,) = struct.unpack_from("<I", plain, 1)
        pos = 5 + 32 * n_sup
        while pos < len(plain):
            pack_id = plain[pos : pos + 32]
            (count,) = struct.unpack_from("<I", plain, pos + 32)
            pos += 36
            for _ in range(count):
                t, c, cid, off, ln, raw = struct.unpack_from("<BB32sIII", plain, pos)
                index[cid] = (pack_id, t, c, off, ln, raw)
                pos += 46
    # every pack header agrees with the index (§6.2)
    for path in (root / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == path.name == path.parent.name + path.name[2:]
            (hlen,) = struct.unpack("<I", data[-4:])
            header = _open(
                k["pack-header"], data[-4 - hlen : -4], b"hdsvault/backup/v1/pack-header"
            )
            assert header[0] == 1 and (len(header) - 1) % 46 == 0
            for i in range(1, len(header), 46):
                t, c, cid, off, ln, raw = struct.unpack_from("<BB32sIII", header, i)
                assert index[cid] == (bytes.fromhex(path.name), t, c, off, ln, raw)

    def blob(cid: bytes) -> bytes:  # §6.1 read procedure
        pack_id, _t, comp, off, ln, raw = index[cid]
        h = pack_id.hex()
        with open(root / "data" / h[:2] / h, "rb") as f:
            f.seek(off)
            body = _open(k["blob"], f.read(ln), cid)
        plain = zstandard.ZstdDecompressor().decompress(body) if comp == 1 else body
        assert len(plain) == raw
        assert hmac.digest(k["chunk-id"], plain, "sha256") == cid
        return plain

    # 4. manifest: signature over prefix || M, then the chain fields
    data = (root / "snapshots" / snap.id).read_bytes()
    assert hashlib.sha256(data).hexdigest() == snap.id
    plain = _open(k["manifest"], data, b"hdsvault/backup/v1/manifest")
    body, signature = plain[:-64], plain[-64:]
    signing_key.public_key().verify(signature, b"hdsvault-backup-manifest-v1\n" + body)
    manifest = json.loads(body)
    assert manifest["seq"] == 1 and manifest["parent"] is None
    assert manifest["repository"] == rid
    assert manifest["config"] == hashlib.sha256((root / "config").read_bytes()).hexdigest()

    # 5-6. walk the trees, rebuild every file, collect reachable IDs
    reachable: set[bytes] = set()
    restored: dict[str, bytes] = {}

    def walk(tree_id: bytes, prefix: str) -> None:
        reachable.add(tree_id)
        for node in json.loads(blob(tree_id))["nodes"]:
            name = node.get("name") or base64.b64decode(node["name_b64"]).decode("latin-1")
            if node["type"] == "dir":
                walk(bytes.fromhex(node["subtree"]), f"{prefix}{name}/")
            elif node["type"] == "file":
                ids = [bytes.fromhex(c) for c in node["chunks"]]
                reachable.update(ids)
                restored[prefix + name] = b"".join(blob(c) for c in ids)
                assert len(restored[prefix + name]) == node["size"]

    walk(bytes.fromhex(manifest["tree"]), "")
    for rel, content in files.items():
        assert restored[f"src/{rel}"] == content
    assert restored["src/latin1-\xe9t\xe9.txt"] == b"non-utf8 name"
    assert manifest["chunks"]["count"] == len(reachable)
    assert manifest["chunks"]["merkle_root"] == _mth(sorted(reachable)).hex()
    assert manifest["packs"] == sorted({index[c][0].hex() for c in reachable})


def test_merkle_root_matches_the_rfc_9162_definition() -> None:
    rng = random.Random(5)
    for n in [*range(0, 20), 31, 32, 33, 100]:
        leaves = [rng.randbytes(32) for _ in range(n)]
        assert merkle_root(leaves) == _mth(sorted(leaves))


def test_escrow_key_file_opens_with_the_documented_scrypt(repo: BackupRepository) -> None:
    from backupkit import ESCROW

    rid = repo.id
    for name in repo.backend.list("keys"):
        doc = json.loads(repo.backend.get(name))
        if doc["kind"] != "escrow":
            continue
        kdf = doc["kdf"]
        w = hashlib.scrypt(
            ESCROW.encode(),
            salt=base64.b64decode(kdf["salt"]),
            n=kdf["n"],
            r=kdf["r"],
            p=kdf["p"],
            dklen=32,
        )
        context = b"hdsvault/backup/v1/master-key\x00" + rid.encode()
        mk = _open(w, base64.b64decode(doc["wrapped"]), context)
        assert len(mk) == 32 and mk == repo.keys.master
        assert os.path.basename(name) == hashlib.sha256(repo.backend.get(name)).hexdigest()
