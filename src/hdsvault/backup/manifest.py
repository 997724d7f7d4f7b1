"""Snapshot manifests and forget records: encrypted, signed, chained (format §8).

Why signed: the platform key (Ed25519) proves that the platform, not whoever can write to the
backup storage, made this snapshot. Why chained (``seq`` + ``parent``) and checked against the
caller's last seen ``seq``: a signature alone does not stop an attacker from deleting the newest
manifests, or rolling the storage back to an older copy, so that an old — validly signed —
state passes for the latest. Why a Merkle root: it commits the snapshot to the exact set of
chunks it references, in the same RFC 9162 hashing as the journal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hdsvault.backup.crypto import Sealer
from hdsvault.backup.errors import CorruptObjectError

__all__ = [
    "MANIFEST_AAD",
    "SIGNATURE_PREFIX",
    "Manifest",
    "SignatureError",
    "key_fingerprint",
    "merkle_root",
    "open_manifest",
    "seal_manifest",
]

MANIFEST_AAD = b"hdsvault/backup/v1/manifest"
SIGNATURE_PREFIX = b"hdsvault-backup-manifest-v1\n"
SIGNATURE_SIZE = 64
SNAPSHOT = "snapshot"
FORGET = "forget"


class SignatureError(CorruptObjectError):
    """The manifest opens but its signature does not verify with any trusted key."""


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key (the manifest's ``signer``)."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def merkle_root(chunk_ids: set[bytes] | list[bytes]) -> bytes:
    """RFC 9162 Merkle Tree Hash over the sorted distinct chunk IDs (format §8.5)."""
    level = [hashlib.sha256(b"\x00" + c).digest() for c in sorted(set(chunk_ids))]
    if not level:
        return hashlib.sha256(b"").digest()
    return _mth(level)


def _mth(leaves: list[bytes]) -> bytes:
    # Iterative form of RFC 9162's recursive split at the largest power of two < n: pairing
    # adjacent nodes level by level and carrying an odd last node up unchanged yields the same
    # tree shape (left subtrees are always perfect).
    while len(leaves) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + leaves[i] + leaves[i + 1]).digest()
            for i in range(0, len(leaves) - 1, 2)
        ]
        if len(leaves) % 2:
            nxt.append(leaves[-1])
        leaves = nxt
    return leaves[0]


@dataclass
class Manifest:
    """The plaintext of a ``snapshots/`` object: a snapshot, or a forget record."""

    kind: str
    repository: str
    config: str
    seq: int
    parent: str | None
    time: str
    host: str
    signer: str = ""
    tags: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    tree: str = ""
    chunk_count: int = 0
    merkle_root: str = ""
    packs: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    removed: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": 1,
            "kind": self.kind,
            "repository": self.repository,
            "config": self.config,
            "seq": self.seq,
            "parent": self.parent,
            "time": self.time,
            "host": self.host,
            "signer": self.signer,
        }
        if self.kind == SNAPSHOT:
            doc.update(
                tags=self.tags,
                paths=self.paths,
                tree=self.tree,
                chunks={"count": self.chunk_count, "merkle_root": self.merkle_root},
                packs=self.packs,
                stats=self.stats,
            )
        else:
            doc["removed"] = self.removed
        return json.dumps(doc, indent=1, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes, what: str) -> Manifest:
        try:
            doc = json.loads(data)
            if doc.get("format") != 1 or doc.get("kind") not in (SNAPSHOT, FORGET):
                raise ValueError("unknown manifest format or kind")
            m = cls(
                kind=doc["kind"],
                repository=str(doc["repository"]),
                config=str(doc["config"]),
                seq=int(doc["seq"]),
                parent=None if doc["parent"] is None else str(doc["parent"]),
                time=str(doc["time"]),
                host=str(doc["host"]),
                signer=str(doc.get("signer", "")),
            )
            if m.kind == SNAPSHOT:
                m.tags = [str(t) for t in doc.get("tags", [])]
                m.paths = [str(p) for p in doc["paths"]]
                m.tree = str(doc["tree"])
                m.chunk_count = int(doc["chunks"]["count"])
                m.merkle_root = str(doc["chunks"]["merkle_root"])
                m.packs = [str(p) for p in doc["packs"]]
                m.stats = dict(doc.get("stats", {}))
            else:
                m.removed = [{"id": str(r["id"]), "seq": int(r["seq"])} for r in doc["removed"]]
            return m
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptObjectError(f"{what}: malformed manifest ({exc})") from exc


def seal_manifest(
    manifest: Manifest, sealer: Sealer, signing_key: Ed25519PrivateKey
) -> tuple[str, bytes]:
    """(snapshot id, file bytes): sign the plaintext, append the signature, seal."""
    manifest.signer = key_fingerprint(signing_key.public_key())
    body = manifest.to_json()
    signature = signing_key.sign(SIGNATURE_PREFIX + body)
    sealed = bytes(sealer.seal(body + signature, MANIFEST_AAD))
    return hashlib.sha256(sealed).hexdigest(), sealed


def open_manifest(
    snapshot_id: str,
    data: bytes,
    sealer: Sealer,
    trusted: dict[str, Ed25519PublicKey],
) -> Manifest:
    """Check name, open, check signature, parse. Raises CorruptObjectError/SignatureError."""
    what = f"snapshots/{snapshot_id}"
    if hashlib.sha256(data).hexdigest() != snapshot_id:
        raise CorruptObjectError(f"{what}: content does not match its name (altered or renamed)")
    try:
        plain = sealer.open(data, MANIFEST_AAD)
    except CorruptObjectError:
        raise CorruptObjectError(f"{what}: manifest does not open (altered)") from None
    if len(plain) <= SIGNATURE_SIZE:
        raise CorruptObjectError(f"{what}: manifest too short")
    body, signature = plain[:-SIGNATURE_SIZE], plain[-SIGNATURE_SIZE:]
    manifest = Manifest.from_json(body, what)
    key = trusted.get(manifest.signer)
    if key is None:
        raise SignatureError(f"{what}: signed by key {manifest.signer[:16]}…, which is not trusted")
    try:
        key.verify(signature, SIGNATURE_PREFIX + body)
    except InvalidSignature:
        raise SignatureError(f"{what}: manifest signature is invalid") from None
    return manifest
