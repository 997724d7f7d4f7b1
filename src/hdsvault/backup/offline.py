"""Offline copies on removable media, and the inventory that says where they are.

Why: an immutable repository protects against deletion through the network; a disk in a safe,
unplugged, protects against everything that needs a network — including root on the backup
host, who can lift ``chattr +i``. CaRE asks for such an offline copy, and for knowing that it
still reads back: hence the inventory (label, where, which snapshots, written when, last
verified when, result) and ``backup media verify``.

An export directory is self-contained::

    repository/          a valid hdsvault repository (docs/backup-format.md): config, keys
                         (KEK- and escrow-wrapped), the exported manifests, their packs, and
                         an index written for exactly those packs
    EXPORT.json          label, repository id, snapshots, time, signer public key
    EXPORT.json.sig      Ed25519 signature (backup-signing key) of EXPORT.json
    SHA256SUMS           every file of repository/, checkable with `sha256sum -c` alone
    README-RESTORE.md    how to read it without this host (escrow passphrase, reader spec)
    backup-format.md     the format specification (a stranger can write a reader from it)

Exporting a subset of snapshots leaves gaps in the manifest chain; media verification knows
which snapshots were exported and does not report those gaps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hdsvault.backup.config import format_time
from hdsvault.backup.engine import BackupRepository
from hdsvault.backup.errors import BackupError, CorruptObjectError
from hdsvault.backup.index import encode_index_file
from hdsvault.backup.keys import KeyEncryptionKey
from hdsvault.backup.pack import pack_name
from hdsvault.backup.repository import LocalRepository
from hdsvault.backup.store import ProgressFn
from hdsvault.backup.verify import Problem, ProblemKind, VerifyReport

__all__ = ["ExportResult", "MediaCheck", "export_repository", "verify_export"]

EXPORT_FILE = "EXPORT.json"
SIGNATURE_PREFIX = b"hdsvault-backup-export-v1\n"
_FORMAT_DOC = Path(__file__).resolve().parents[3] / "docs" / "backup-format.md"

README = """# Offline copy of an hdsvault backup repository — {label}

Written {time} from repository `{repository}` ({count} snapshot(s)).
Contents: `repository/` is a complete hdsvault backup repository in format 1, specified in
`backup-format.md` beside this file; everything in it is encrypted (AES-256-GCM) and named by
its SHA-256.

## Check the medium without any key

    cd <this directory> && sha256sum -c SHA256SUMS

## Restore with hdsvault (any host)

With the platform KEK available (same key file or HSM):

    hdsvault backup restore latest --from-dir repository --to /srv/restore

Without the KEK, with the escrow passphrase kept in the PRA envelope:

    hdsvault backup restore latest --from-dir repository --to /srv/restore --escrow
    # add --platform --database-url ... to rebuild a runnable platform (docs/backup.md)

The manifests are signed by the platform key whose public part is in EXPORT.json
(`signer_public_key`); compare it with the fingerprint recorded in the PRA runbook.

## Without hdsvault

`backup-format.md` §13 lists the steps to read a file: unwrap the master key from the escrow
key file (scrypt + AES-256-GCM), derive the keys (HKDF-SHA256), read the index, open the
manifest, walk the trees, read the blobs.
"""


@dataclass
class ExportResult:
    target: Path
    label: str
    snapshots: list[str]
    objects: int = 0
    bytes: int = 0


@dataclass
class MediaCheck:
    """Result of verifying an offline copy."""

    label: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    report: VerifyReport | None = None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def export_repository(
    repo: BackupRepository,
    target: Path,
    *,
    label: str,
    signing_key: Ed25519PrivateKey,
    snapshot_ids: Sequence[str] | None = None,
    platform_id: str = "",
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Write a self-contained copy of ``repo`` (or of some snapshots) into ``target``."""
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: export to an empty directory or medium")
    src = repo.backend
    all_snaps = repo.snapshots()
    chosen = [repo.snapshot(s) for s in snapshot_ids] if snapshot_ids else all_snaps
    if not chosen:
        raise BackupError("the repository has no snapshot to export")
    subset = len(chosen) != len(all_snaps)
    dest_root = target / "repository"
    dest_root.mkdir(parents=True, mode=0o700)
    dest = LocalRepository(dest_root)
    result = ExportResult(target, label, [s.id for s in chosen])

    names = ["config", *src.list("keys")]
    if subset:
        names += [f"snapshots/{s.id}" for s in chosen]
    else:
        names += src.list("snapshots")  # forget records included: the chain stays whole
    packs = sorted({p for s in chosen for p in s.manifest.packs})
    pack_names = [pack_name(bytes.fromhex(p)) for p in packs]
    if subset:
        entries = {
            bytes.fromhex(p): repo.store.index.packs.get(bytes.fromhex(p), []) for p in packs
        }
        index_name, index_data = encode_index_file(
            {k: v for k, v in entries.items() if v}, [], repo.keys.index
        )
        dest.put(index_name, index_data)
    else:
        names += src.list("index")
    total = sum(src.size(n) for n in pack_names)
    done = 0
    for name in [*names, *pack_names]:
        data = src.get(name)
        if name != "config" and hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[-1]:
            raise CorruptObjectError(f"{name} does not match its name in the source: not exported")
        dest.put(name, data)
        result.objects += 1
        result.bytes += len(data)
        if name in pack_names:
            done += len(data)
            if progress is not None:
                progress(done, total)

    sums = []
    for dirpath, _dirs, files in os.walk(dest_root):
        for f in sorted(files):
            path = Path(dirpath, f)
            sums.append(f"{_sha256(path)}  {path.relative_to(target).as_posix()}")
    (target / "SHA256SUMS").write_text("\n".join(sorted(sums, key=lambda s: s[66:])) + "\n")
    from hdsvault.backup.service import public_key_b64  # (service imports this module)

    doc: dict[str, Any] = {
        "format": 1,
        "label": label,
        "platform_id": platform_id,
        "repository": repo.id,
        "written_at": format_time(datetime.now(UTC)),
        "subset": subset,
        "snapshots": [{"id": s.id, "seq": s.seq, "time": s.time} for s in chosen],
        "objects": result.objects,
        "bytes": result.bytes,
        "signer_public_key": public_key_b64(signing_key.public_key()),
    }
    body = json.dumps(doc, indent=1, sort_keys=True).encode()
    (target / EXPORT_FILE).write_bytes(body)
    signature = signing_key.sign(SIGNATURE_PREFIX + body)
    (target / f"{EXPORT_FILE}.sig").write_text(base64.b64encode(signature).decode() + "\n")
    (target / "README-RESTORE.md").write_text(
        README.format(label=label, time=doc["written_at"], repository=repo.id, count=len(chosen))
    )
    if _FORMAT_DOC.is_file():
        (target / "backup-format.md").write_bytes(_FORMAT_DOC.read_bytes())
    _fsync_tree(target)
    return result


def _fsync_tree(root: Path) -> None:
    """Everything on the medium before it is unplugged."""
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(Path(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_export(target: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads((target / EXPORT_FILE).read_bytes())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{target} is not an hdsvault export ({EXPORT_FILE}: {exc})") from None
    return doc


def verify_export(
    target: Path,
    *,
    trusted_keys: Sequence[Ed25519PublicKey],
    kek: KeyEncryptionKey | None = None,
    passphrase: str | None = None,
    label: str | None = None,
    progress: ProgressFn | None = None,
) -> MediaCheck:
    """Check an export: label, signature, SHA256SUMS, then a full ``verify(read_data=True)``."""
    doc = read_export(target)
    check = MediaCheck(label=str(doc.get("label")), ok=False)
    check.snapshots = [str(s["id"]) for s in doc.get("snapshots", [])]
    if label is not None and doc.get("label") != label:
        check.problems.append(f"medium is labelled {doc.get('label')!r}, not {label!r}")
    body = (target / EXPORT_FILE).read_bytes()
    try:
        signature = base64.b64decode((target / f"{EXPORT_FILE}.sig").read_text().strip())
        verified = False
        for key in trusted_keys:
            try:
                key.verify(signature, SIGNATURE_PREFIX + body)
                verified = True
                break
            except InvalidSignature:
                continue
        if not verified:
            check.problems.append(f"{EXPORT_FILE}: signature invalid or by an untrusted key")
    except (OSError, ValueError):
        check.problems.append(f"{EXPORT_FILE}.sig missing or unreadable")
    listed: set[str] = set()
    try:
        lines = (target / "SHA256SUMS").read_text().splitlines()
    except OSError:
        lines = []
        check.problems.append("SHA256SUMS missing")
    for line in lines:
        digest, _, rel = line.partition("  ")
        listed.add(rel)
        path = target / rel
        if not path.is_file():
            check.problems.append(f"{rel}: missing")
        elif _sha256(path) != digest:
            check.problems.append(f"{rel}: SHA-256 differs from SHA256SUMS")
    for dirpath, _dirs, files in os.walk(target / "repository"):
        for f in files:
            rel = Path(dirpath, f).relative_to(target).as_posix()
            if rel not in listed and not f.startswith(".tmp-"):
                check.problems.append(f"{rel}: not in SHA256SUMS (added after export)")
    repo = BackupRepository.open(
        LocalRepository(target / "repository", durable=False),
        kek=kek,
        passphrase=passphrase,
        trusted_keys=trusted_keys,
    )
    report = repo.verify(read_data=True, progress=progress)
    if doc.get("subset"):  # chain gaps are expected where snapshots were not exported
        gaps = {ProblemKind.SNAPSHOT_MISSING, ProblemKind.CHAIN_BROKEN}
        report.problems = [p for p in report.problems if p.kind not in gaps]
    found = {s.id for s in repo.snapshots()}
    for sid in check.snapshots:
        if sid not in found:
            report.problems.append(
                Problem(ProblemKind.SNAPSHOT_MISSING, f"snapshots/{sid}", "exported, now absent")
            )
    check.report = report
    check.problems += [str(p) for p in report.errors]
    check.ok = not check.problems
    return check
