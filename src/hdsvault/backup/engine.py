"""The backup repository as callers see it: init, open, backup, restore, verify, forget, prune.

Why a facade: the CLI, the platform's scheduled jobs and the restore drills need a handful of
verbs, not packs and keys. This module holds the policy around the mechanisms — who may open
(KEK or escrow passphrase), which key signs, the writer lock, the chain position of the next
manifest, the parent used for change detection — and delegates the work to ``snapshot``,
``verify`` and ``forget``.

Typical use::

    repo = BackupRepository.init(LocalRepository("/backup/repo"), kek=kek, signing_key=key,
                                 escrow_passphrase=passphrase)
    snap = repo.backup(["/var/lib/hdsvault"])
    report = repo.verify(read_data=True, last_seen_seq=journal_last_seq)
    repo.restore(snap.id, "/restore/here")
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hdsvault.backup.config import ChunkerParams, RepositoryConfig, utc_now
from hdsvault.backup.errors import (
    BackupError,
    CorruptObjectError,
    KeyFileError,
    ObjectExistsError,
    ObjectMissingError,
    RepositoryFormatError,
    RepositoryLockedError,
    WrongKeyError,
)
from hdsvault.backup.forget import ForgetPlan, PruneResult, RetentionPolicy, plan_forget, prune
from hdsvault.backup.index import Index, encode_index_file, iter_pack_ids, load_index
from hdsvault.backup.keys import (
    DEFAULT_SCRYPT,
    KeyEncryptionKey,
    RepositoryKeys,
    ScryptParams,
    escrow_key_file,
    kek_key_file,
    open_key_file,
    parse_key_file,
)
from hdsvault.backup.manifest import FORGET, SNAPSHOT, Manifest, key_fingerprint, open_manifest
from hdsvault.backup.manifest import seal_manifest as _seal_manifest
from hdsvault.backup.pack import PackEntry, pack_name, read_pack_header
from hdsvault.backup.repository import RepositoryBackend
from hdsvault.backup.snapshot import RestoreResult, Snapshot, backup, restore
from hdsvault.backup.store import BlobStore, ProgressFn
from hdsvault.backup.verify import VerifyReport, verify

__all__ = ["BackupRepository", "ForgetResult", "RebuildResult"]

LOCK_NAME = "locks/exclusive"
_INDEX_PACKS_PER_FILE = 20_000


@dataclass
class ForgetResult:
    plan: ForgetPlan
    removed: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    """Snapshots the policy would remove but the backend reports immutable (kept)."""
    record: str | None = None


@dataclass
class RebuildResult:
    packs_indexed: int = 0
    unreadable_packs: list[str] = field(default_factory=list)
    index_written: list[str] = field(default_factory=list)
    index_deleted: list[str] = field(default_factory=list)


class BackupRepository:
    """An open backup repository (see the module docstring)."""

    def __init__(
        self,
        backend: RepositoryBackend,
        config: RepositoryConfig,
        config_hash: str,
        keys: RepositoryKeys,
        *,
        signing_key: Ed25519PrivateKey | None = None,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        workers: int | None = None,
    ) -> None:
        self.backend = backend
        self.config = config
        self.signing_key = signing_key
        trusted = list(trusted_keys)
        if signing_key is not None:
            trusted.append(signing_key.public_key())
        self.trusted_keys = trusted
        self.workers = workers or max(2, os.cpu_count() or 2)
        index, _problems = load_index(backend, keys.index)
        self.store = BlobStore(backend, config, config_hash, keys, index)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def keys(self) -> RepositoryKeys:
        return self.store.keys

    # -- creation and opening --------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: RepositoryBackend,
        *,
        kek: KeyEncryptionKey,
        escrow_passphrase: str | None = None,
        chunker: ChunkerParams | None = None,
        pack_size: int = 16 * 1024 * 1024,
        compression_level: int = 3,
        scrypt: ScryptParams = DEFAULT_SCRYPT,
        signing_key: Ed25519PrivateKey | None = None,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        workers: int | None = None,
    ) -> BackupRepository:
        """Create a repository: config, a fresh master key wrapped by ``kek`` (and escrow)."""
        if backend.exists("config"):
            raise RepositoryFormatError(f"{backend!r} already holds a repository")
        config = RepositoryConfig(
            chunker=chunker or ChunkerParams(),
            pack_size=pack_size,
            compression_level=compression_level,
        )
        master = os.urandom(32)
        keys = RepositoryKeys(master, config.id)
        key_file = kek_key_file(master, config.id, kek, keys.key_check)
        backend.put(f"keys/{hashlib.sha256(key_file).hexdigest()}", key_file)
        if escrow_passphrase is not None:
            escrow = escrow_key_file(master, config.id, escrow_passphrase, keys.key_check, scrypt)
            backend.put(f"keys/{hashlib.sha256(escrow).hexdigest()}", escrow)
        config_bytes = config.to_bytes()
        try:
            backend.put("config", config_bytes)  # last: a repository exists once it has keys
        except ObjectExistsError:
            raise RepositoryFormatError(f"{backend!r} already holds a repository") from None
        return cls(
            backend,
            config,
            hashlib.sha256(config_bytes).hexdigest(),
            keys,
            signing_key=signing_key,
            trusted_keys=trusted_keys,
            workers=workers,
        )

    @classmethod
    def open(
        cls,
        backend: RepositoryBackend,
        *,
        kek: KeyEncryptionKey | None = None,
        passphrase: str | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        workers: int | None = None,
    ) -> BackupRepository:
        """Open with the platform KEK, or with the escrow passphrase (another site)."""
        if kek is None and passphrase is None:
            raise KeyFileError("opening a repository needs a KEK or the escrow passphrase")
        try:
            config_bytes = backend.get("config")
        except ObjectMissingError:
            raise RepositoryFormatError(
                f"no backup repository at {backend!r} (no config object)"
            ) from None
        config = RepositoryConfig.from_bytes(config_bytes)
        docs: list[tuple[str, dict[str, Any]]] = []
        for name in backend.list("keys"):
            try:
                docs.append((name, parse_key_file(name, backend.get(name))))
            except CorruptObjectError:
                continue
        kind = "kek" if kek is not None else "escrow"
        candidates = [(n, d) for n, d in docs if d.get("kind") == kind]
        if kek is not None:
            matching = [(n, d) for n, d in candidates if d.get("kek_id") == kek.kek_id]
            if not matching:
                known = sorted({str(d.get("kek_id")) for _, d in candidates}) or ["none"]
                raise WrongKeyError(
                    f"the repository key is not wrapped by KEK {kek.kek_id} (it is by: "
                    f"{', '.join(known)}): wrong KEK, or open with the escrow passphrase"
                )
            candidates = matching
        if not candidates:
            raise KeyFileError(f"the repository has no {kind} key file")
        last: Exception | None = None
        for name, doc in candidates:
            try:
                keys = open_key_file(name, doc, config.id, kek=kek, passphrase=passphrase)
                break
            except (WrongKeyError, CorruptObjectError) as exc:
                last = exc
        else:
            assert last is not None
            raise last
        return cls(
            backend,
            config,
            hashlib.sha256(config_bytes).hexdigest(),
            keys,
            signing_key=signing_key,
            trusted_keys=trusted_keys,
            workers=workers,
        )

    def add_escrow(self, passphrase: str, params: ScryptParams = DEFAULT_SCRYPT) -> str:
        """Add a passphrase-wrapped copy of the master key; returns the key object name."""
        data = escrow_key_file(self.keys.master, self.id, passphrase, self.keys.key_check, params)
        name = f"keys/{hashlib.sha256(data).hexdigest()}"
        self.backend.put(name, data)
        return name

    # -- lock ----------------------------------------------------------------------------------

    @contextmanager
    def lock(self, operation: str) -> Iterator[None]:
        """Hold ``locks/exclusive`` for a writing operation (format §10)."""
        doc = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": utc_now(),
            "operation": operation,
        }
        try:
            self.backend.put(LOCK_NAME, json.dumps(doc).encode())
        except ObjectExistsError:
            try:
                holder = self.backend.get(LOCK_NAME).decode("utf-8", "replace")
            except ObjectMissingError:
                holder = "(released meanwhile; retry)"
            raise RepositoryLockedError(
                f"repository is locked by another writer: {holder}; if that process is gone, "
                "run break_lock"
            ) from None
        try:
            yield
        finally:
            self.backend.delete(LOCK_NAME)

    def break_lock(self) -> bool:
        """Remove a stale writer lock; returns whether there was one."""
        if not self.backend.exists(LOCK_NAME):
            return False
        self.backend.delete(LOCK_NAME)
        return True

    # -- snapshots -------------------------------------------------------------------------------

    def _manifests(self) -> list[Snapshot]:
        trusted = {key_fingerprint(k): k for k in self.trusted_keys}
        out: list[Snapshot] = []
        for name in self.backend.list("snapshots"):
            sid = name.rsplit("/", 1)[-1]
            try:
                m = open_manifest(sid, self.backend.get(name), self.keys.manifest, trusted)
            except (CorruptObjectError, ObjectMissingError):
                continue  # verify reports it
            if m.repository == self.id:
                out.append(Snapshot(sid, m))
        out.sort(key=lambda s: s.seq)
        return out

    def snapshots(self) -> list[Snapshot]:
        """Valid, trusted snapshots, oldest first (forget records excluded)."""
        return [s for s in self._manifests() if s.manifest.kind == SNAPSHOT]

    def snapshot(self, ref: str) -> Snapshot:
        """A snapshot by id or unique id prefix (``latest`` for the newest)."""
        snaps = self.snapshots()
        if ref == "latest":
            if not snaps:
                raise BackupError("the repository has no snapshot")
            return snaps[-1]
        found = [s for s in snaps if s.id.startswith(ref)]
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise BackupError(f"{what} valid snapshot matches {ref!r}")
        return found[0]

    def _head(self) -> tuple[int, str | None]:
        manifests = self._manifests()
        if not manifests:
            return 0, None
        return manifests[-1].seq, manifests[-1].id

    def _require_signer(self) -> Ed25519PrivateKey:
        if self.signing_key is None:
            raise BackupError("this operation signs a manifest: open with signing_key=")
        return self.signing_key

    # -- verbs ---------------------------------------------------------------------------------

    def backup(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        host: str | None = None,
        tags: Iterable[str] = (),
        parent: str | None = None,
        progress: ProgressFn | None = None,
        reread: bool = False,
    ) -> Snapshot:
        """Back up ``paths`` into a new signed snapshot (incremental against its parent)."""
        signer = self._require_signer()
        host = host or socket.gethostname()
        with self.lock("backup"):
            seq, head = self._head()
            wanted = sorted(os.path.abspath(p) for p in paths)
            if parent is not None:
                base: Snapshot | None = self.snapshot(parent)
            else:
                same = [
                    s
                    for s in self.snapshots()
                    if s.manifest.host == host and sorted(s.paths) == wanted
                ]
                base = same[-1] if same else None
            self.store.begin()
            try:
                return backup(
                    self.store,
                    paths,
                    signing_key=signer,
                    seq=seq + 1,
                    parent_id=head,
                    parent_tree=bytes.fromhex(base.manifest.tree) if base else None,
                    host=host,
                    tags=tags,
                    progress=progress,
                    workers=self.workers,
                    reread=reread,
                )
            finally:
                self.store.close()

    def restore(
        self,
        snapshot: str,
        target_dir: str | os.PathLike[str],
        *,
        salvage: bool = False,
        progress: ProgressFn | None = None,
    ) -> RestoreResult:
        """Restore a snapshot (id, prefix or ``latest``); all-or-nothing unless ``salvage``."""
        return restore(
            self.store,
            self.snapshot(snapshot),
            target_dir,
            salvage=salvage,
            progress=progress,
            workers=self.workers,
        )

    def verify(
        self,
        read_data: bool | float = False,
        *,
        last_seen_seq: int | None = None,
        progress: ProgressFn | None = None,
    ) -> VerifyReport:
        """Check everything; ``read_data`` True (all packs) or a fraction (random sample)."""
        return verify(
            self.store,
            trusted_keys=self.trusted_keys,
            read_data=read_data,
            last_seen_seq=last_seen_seq,
            progress=progress,
            workers=self.workers,
        )

    def forget(self, policy: RetentionPolicy, *, dry_run: bool = False) -> ForgetResult:
        """Apply a retention policy: signed forget record, then manifest deletions."""
        plan = plan_forget(self.snapshots(), policy)
        result = ForgetResult(plan)
        if dry_run or not plan.remove:
            return result
        signer = self._require_signer()
        with self.lock("forget"):
            removable = []
            for snap in plan.remove:
                if self.backend.is_locked(f"snapshots/{snap.id}"):
                    result.locked.append(snap.id)
                else:
                    removable.append(snap)
            if not removable:
                return result
            seq, head = self._head()
            record = Manifest(
                kind=FORGET,
                repository=self.id,
                config=self.store.config_hash,
                seq=seq + 1,
                parent=head,
                time=utc_now(),
                host=socket.gethostname(),
                removed=[{"id": s.id, "seq": s.seq} for s in removable],
            )
            record_id, data = _seal_manifest(record, self.keys.manifest, signer)
            self.backend.put(f"snapshots/{record_id}", data)
            result.record = record_id
            for snap in removable:
                self.backend.delete(f"snapshots/{snap.id}")
                result.removed.append(snap.id)
        return result

    def prune(self, *, dry_run: bool = False) -> PruneResult:
        """Delete packs no live snapshot references (never a locked one)."""
        with self.lock("prune"):
            index, problems = load_index(self.backend, self.keys.index)
            if problems:
                raise BackupError(
                    f"prune refused: index file {problems[0][0]} is unreadable; "
                    "run rebuild_index first"
                )
            self.store.index = index
            return prune(self.store, self.snapshots(), dry_run=dry_run)

    def rebuild_index(self, *, progress: ProgressFn | None = None) -> RebuildResult:
        """Recreate the index from every pack's header; supersede and delete the old files.

        ``progress(packs done, packs total)``: the work is one header read per pack.
        """
        result = RebuildResult()
        with self.lock("rebuild-index"):
            names = self.backend.list("data")
            ids = list(iter_pack_ids(names))
            old = self.backend.list("index")

            def header(pack_id: bytes) -> list[PackEntry] | None:
                try:
                    return read_pack_header(self.backend, pack_name(pack_id), self.keys.header)
                except (CorruptObjectError, ObjectMissingError):
                    return None

            index = Index()
            with ThreadPoolExecutor(self.workers) as pool:
                headers = zip(ids, pool.map(header, ids), strict=True)
                for n, (pack_id, entries) in enumerate(headers):
                    if entries is None:
                        result.unreadable_packs.append(pack_name(pack_id))
                    else:
                        index.add_pack(pack_id, entries)
                    if progress is not None:
                        progress(n + 1, len(ids))
            packs = list(index.packs.items())
            for start in range(0, max(len(packs), 1), _INDEX_PACKS_PER_FILE):
                chunk = dict(packs[start : start + _INDEX_PACKS_PER_FILE])
                name, data = encode_index_file(chunk, old, self.keys.index)
                if not self.backend.exists(name):
                    self.backend.put(name, data)
                result.index_written.append(name)
            index.files = list(result.index_written)
            for name in old:
                if name not in result.index_written and not self.backend.is_locked(name):
                    self.backend.delete(name)
                    result.index_deleted.append(name)
            result.packs_indexed = len(index.packs)
            self.store.index = index
        return result
