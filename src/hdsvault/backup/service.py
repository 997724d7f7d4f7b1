"""The backup service of a running platform: what the CLI, the daemon and drills call.

Why a service above :class:`~hdsvault.backup.engine.BackupRepository`: the repository library
knows nothing of the platform. This layer adds what only the platform can give — the KEK that
wraps repository keys, the ``backup-signing`` Ed25519 key (a platform secret in the keyring),
the configured repositories, and the journal. Every act is journaled in the platform log
(``backup.run``, ``backup.verify``, ``backup.restore``...), and the journal is also the
*witness* of each repository's newest snapshot: ``backup.run`` names the snapshot and its
``seq``, so a verify compares the repository with what the platform remembers and catches a
rolled-back or replayed repository that is, on its own, perfectly consistent.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import insert, select

from hdsvault.backup.engine import BackupRepository, ForgetResult
from hdsvault.backup.errors import BackupError, ObjectMissingError, RepositoryFormatError
from hdsvault.backup.forget import RetentionPolicy
from hdsvault.backup.platform_snapshot import (
    BLOBS_DIR,
    PLATFORM_DIR,
    PlatformManifest,
    RestoredPlatform,
    restore_platform,
    snapshot_platform,
)
from hdsvault.backup.repository import LocalRepository, RepositoryBackend
from hdsvault.backup.s3 import S3Repository
from hdsvault.backup.snapshot import RestoreResult, Snapshot
from hdsvault.backup.store import ProgressFn
from hdsvault.backup.verify import VerifyReport
from hdsvault.backup.worm import HardenedLocalRepository
from hdsvault.config import BackupRepositorySettings, Settings
from hdsvault.crypto.kek import KeyEncryptionKey, load_kek
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import backup_checks, journal_entries
from hdsvault.journal.entry import (
    PLATFORM_LOG,
    Action,
    Category,
    JournalEntry,
    Outcome,
    Severity,
)
from hdsvault.journal.service import integrate, record
from hdsvault.platform import Platform, platform_id

__all__ = [
    "BACKUP_SIGNING_PURPOSE",
    "BackupService",
    "RunResult",
    "open_backend",
    "parse_policy",
    "public_key_b64",
]

BACKUP_SIGNING_PURPOSE = "backup-signing"
Step = Callable[[str], None]


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key in base64 (``backup.trusted_signers`` format)."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def parse_policy(text: str) -> RetentionPolicy:
    """``daily=30,monthly=12,yearly=10`` (also ``last``/``weekly``) -> :class:`RetentionPolicy`."""
    fields = {"last", "daily", "weekly", "monthly", "yearly"}
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, number = part.partition("=")
        name = name.strip().removeprefix("keep_").removeprefix("keep-")
        if not sep or name not in fields or not number.strip().isdigit():
            raise BackupError(
                f"bad retention rule {part!r}: use e.g. daily=30,monthly=12,yearly=10 "
                f"(rules: {', '.join(sorted(fields))})"
            )
        values[f"keep_{name}"] = int(number)
    policy = RetentionPolicy(**values)
    if policy.empty:
        raise BackupError("a retention policy needs at least one rule with a count > 0")
    return policy


def open_backend(
    cfg: BackupRepositorySettings, *, clock: Callable[[], datetime] | None = None
) -> RepositoryBackend:
    """The storage backend of one configured repository."""
    retention = timedelta(days=cfg.retention_days)
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    if cfg.kind == "hardened-local":
        assert cfg.path is not None
        return HardenedLocalRepository(cfg.path, retention, **kwargs)
    if cfg.kind == "local":
        assert cfg.path is not None
        cfg.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return LocalRepository(cfg.path)
    assert cfg.bucket is not None
    return S3Repository(
        cfg.bucket,
        retention=retention,
        prefix=cfg.prefix,
        endpoint_url=cfg.endpoint_url,
        region=cfg.region,
        access_key_id=cfg.access_key_id,
        secret_access_key=(
            cfg.secret_access_key.get_secret_value() if cfg.secret_access_key else None
        ),
        **kwargs,
    )


@dataclass
class RunResult:
    """One platform backup: the snapshot, what it holds, how long each step took."""

    repository: str
    snapshot: Snapshot
    manifest: PlatformManifest
    seconds: dict[str, float] = field(default_factory=dict)


class BackupService:
    """Backups of one opened platform, on behalf of ``actor`` (journaled)."""

    def __init__(
        self,
        platform: Platform,
        actor: str,
        *,
        config_file: Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.platform = platform
        self.settings: Settings = platform.settings
        self.actor = actor
        self.config_file = config_file
        self.clock = clock
        self._signing: Ed25519PrivateKey | None = None
        self._kek: KeyEncryptionKey | None = None

    # -- keys and journal ----------------------------------------------------------------------

    def signing_key(self) -> Ed25519PrivateKey:
        """The platform's backup-signing key (created, and journaled, on first use)."""
        if self._signing is None:
            keyring = self.platform.keyring
            with self.platform.engine.begin() as conn:
                if keyring.ensure_platform_secret(conn, BACKUP_SIGNING_PURPOSE):
                    self.journal(
                        conn,
                        "platform.key.create",
                        Category.ADMINISTRATION,
                        action=Action.CREATE,
                        objects=(f"PlatformKey/{BACKUP_SIGNING_PURPOSE}",),
                    )
            with read_connection(self.platform.engine) as conn:
                seed = keyring.platform_secret(conn, BACKUP_SIGNING_PURPOSE)
            self._signing = Ed25519PrivateKey.from_private_bytes(seed)
        return self._signing

    def kek(self) -> KeyEncryptionKey:
        """The platform KEK: it wraps the repository master keys as it wraps tenant keys."""
        if self._kek is None:
            self._kek = load_kek(self.settings.kek, self.settings.kek_file)
        return self._kek

    def trusted_keys(self) -> list[Ed25519PublicKey]:
        keys = [self.signing_key().public_key()]
        for text in self.settings.backup.trusted_signers:
            keys.append(Ed25519PublicKey.from_public_bytes(base64.b64decode(text)))
        return keys

    def platform_id(self) -> str:
        with read_connection(self.platform.engine) as conn:
            return platform_id(conn)

    def journal(
        self,
        conn: Any,
        event: str,
        category: Category,
        *,
        action: Action = Action.EXECUTE,
        objects: tuple[str, ...] = (),
        outcome: Outcome = Outcome.SUCCESS,
        severity: Severity = Severity.NOTICE,
    ) -> None:
        record(
            conn,
            JournalEntry(
                log_id=PLATFORM_LOG,
                time=datetime.now(UTC),
                event_type=event,
                category=category,
                action=action,
                outcome=outcome,
                actor=self.actor,
                actor_role="platform-operator",
                objects=objects,
                severity=severity,
            ),
        )

    def journal_now(self, event: str, category: Category, **kw: Any) -> None:
        """Journal an act in its own transaction (acts that touch no platform table)."""
        with self.platform.engine.begin() as conn:
            self.journal(conn, event, category, **kw)

    # -- repositories ----------------------------------------------------------------------------

    def config_of(self, name: str | None) -> BackupRepositorySettings:
        repos = self.settings.backup.repositories
        if not repos:
            raise BackupError("no backup repository configured: add [[backup.repositories]]")
        if name is None:
            return repos[0]
        for r in repos:
            if r.name == name:
                return r
        raise BackupError(
            f"no backup repository named {name!r} (configured: {', '.join(r.name for r in repos)})"
        )

    def backend(self, name: str | None) -> RepositoryBackend:
        return open_backend(self.config_of(name), clock=self.clock)

    def open(self, name: str | None, *, create: bool = False) -> BackupRepository:
        """Open a configured repository with the platform KEK (``create``: init if absent)."""
        backend = self.backend(name)
        kek = self.kek()
        try:
            return BackupRepository.open(
                backend,
                kek=kek,
                signing_key=self.signing_key(),
                trusted_keys=self.trusted_keys(),
            )
        except RepositoryFormatError:
            if not create or backend.exists("config"):
                raise
        repo = BackupRepository.init(
            backend, kek=kek, signing_key=self.signing_key(), trusted_keys=self.trusted_keys()
        )
        self.journal_now(
            "backup.repository.init",
            Category.ADMINISTRATION,
            action=Action.CREATE,
            objects=(
                f"BackupRepository/{repo.id}",
                f"BackupRepositoryName/{self.config_of(name).name}",
            ),
        )
        return repo

    def add_escrow(self, name: str | None, passphrase: str) -> str:
        repo = self.open(name, create=True)
        key_name = repo.add_escrow(passphrase)
        self.journal_now(
            "backup.escrow.add",
            Category.ADMINISTRATION,
            action=Action.CREATE,
            objects=(f"BackupRepository/{repo.id}", f"BackupKey/{key_name.rsplit('/', 1)[-1]}"),
        )
        return key_name

    def last_seen_seq(self, repository_id: str) -> int | None:
        """The newest manifest ``seq`` the journal witnessed for this repository."""
        marker = f"BackupRepository/{repository_id}"
        best: int | None = None
        with read_connection(self.platform.engine) as conn:
            rows = conn.execute(
                select(journal_entries.c.objects).where(
                    journal_entries.c.log_id == PLATFORM_LOG,
                    journal_entries.c.event_type.in_(("backup.run", "backup.forget")),
                    journal_entries.c.outcome == Outcome.SUCCESS.value,
                    journal_entries.c.objects.contains(marker),
                )
            )
            for (objects,) in rows:
                refs = orjson.loads(objects)
                if marker not in refs:
                    continue
                for ref in refs:
                    if ref.startswith("BackupSeq/"):
                        seq = int(ref.split("/", 1)[1])
                        best = seq if best is None else max(best, seq)
        return best

    # -- backup ----------------------------------------------------------------------------------

    def run(
        self,
        name: str | None = None,
        *,
        progress: ProgressFn | None = None,
        step: Step | None = None,
        tags: tuple[str, ...] = (),
    ) -> RunResult:
        """Snapshot the platform into the repository ``name``; journal ``backup.run``."""
        cfg = self.config_of(name)
        seconds: dict[str, float] = {}
        try:
            repo = self.open(cfg.name, create=True)
            integrate(self.platform)  # sequence pending entries: checkpoints as fresh as can be
            data_dir = self.settings.data_dir.resolve()
            work = data_dir / "run" / f"backup-{cfg.name}"
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True, mode=0o700)
            try:
                t0 = datetime.now(UTC)
                manifest = snapshot_platform(
                    database_url=self.settings.database_url,
                    platform_id=self.platform_id(),
                    kek_id=self.platform.keyring.kek_id,
                    staging=work / PLATFORM_DIR,
                    config_file=self.config_file,
                    pg_bin_dir=self.settings.backup.pg_bin_dir,
                    step=step,
                )
                t1 = datetime.now(UTC)
                seconds["platform snapshot"] = (t1 - t0).total_seconds()
                paths = [work / PLATFORM_DIR]
                if (data_dir / BLOBS_DIR).is_dir():
                    paths.append(data_dir / BLOBS_DIR)
                if step:
                    step("repository")
                snap = repo.backup(paths, tags=("platform", *tags), progress=progress)
                seconds["repository backup"] = (datetime.now(UTC) - t1).total_seconds()
            finally:
                shutil.rmtree(work, ignore_errors=True)
        except Exception as exc:
            self.journal_now(
                "backup.run",
                Category.MOVEMENT,
                objects=(f"BackupRepositoryName/{cfg.name}",),
                outcome=Outcome.SERIOUS_FAILURE,
                severity=Severity.WARNING,
            )
            raise BackupError(f"backup to {cfg.name} failed: {exc}") from exc
        self.journal_now(
            "backup.run",
            Category.MOVEMENT,
            objects=(
                f"BackupRepository/{repo.id}",
                f"BackupRepositoryName/{cfg.name}",
                f"BackupSnapshot/{snap.id}",
                f"BackupSeq/{snap.seq}",
            ),
        )
        return RunResult(cfg.name, snap, manifest, seconds)

    # -- verify ----------------------------------------------------------------------------------

    def verify(
        self,
        name: str | None = None,
        *,
        read_data: bool | float = False,
        progress: ProgressFn | None = None,
    ) -> VerifyReport:
        """Verify a repository against itself *and* the journal; record and journal the result."""
        cfg = self.config_of(name)
        repo = self.open(cfg.name)
        last_seen = self.last_seen_seq(repo.id)
        report = repo.verify(read_data=read_data, last_seen_seq=last_seen, progress=progress)
        kind = "read-data" if read_data is True else ("sample" if read_data else "verify")
        self.record_check(f"repo:{cfg.name}", kind, report.ok, len(report.errors), report.summary())
        self.journal_now(
            "backup.verify",
            Category.ADMINISTRATION,
            objects=(f"BackupRepository/{repo.id}", f"BackupRepositoryName/{cfg.name}"),
            outcome=Outcome.SUCCESS if report.ok else Outcome.SERIOUS_FAILURE,
            severity=Severity.NOTICE if report.ok else Severity.WARNING,
        )
        return report

    def record_check(self, target: str, kind: str, ok: bool, errors: int, summary: str) -> None:
        with self.platform.engine.begin() as conn:
            conn.execute(
                insert(backup_checks).values(
                    target=target,
                    kind=kind,
                    time=datetime.now(UTC),
                    ok=ok,
                    errors=errors,
                    summary=summary[:20000],
                )
            )

    # -- retention -------------------------------------------------------------------------------

    def forget(
        self,
        name: str | None,
        policy: RetentionPolicy,
        *,
        dry_run: bool = False,
        prune: bool = True,
    ) -> tuple[ForgetResult, Any]:
        """Apply ``policy`` (never removing a locked object), then prune unreferenced packs."""
        cfg = self.config_of(name)
        repo = self.open(cfg.name)
        result = repo.forget(policy, dry_run=dry_run)
        pruned = repo.prune(dry_run=dry_run) if prune else None
        if not dry_run:
            objects = [f"BackupRepository/{repo.id}", f"BackupRepositoryName/{cfg.name}"]
            if result.record is not None:
                head = max(s.seq for s in repo._manifests())
                objects += [f"BackupForget/{result.record}", f"BackupSeq/{head}"]
            objects += [f"BackupSnapshot/{s}" for s in result.removed]
            self.journal_now(
                "backup.forget",
                Category.ADMINISTRATION,
                action=Action.DELETE,
                objects=tuple(objects),
            )
        return result, pruned

    def maintain(self, name: str | None = None) -> int:
        """Extend the Object Lock of every object live snapshots need (S3); count extended."""
        cfg = self.config_of(name)
        backend = self.backend(cfg.name)
        if not isinstance(backend, S3Repository):
            return 0
        repo = self.open(cfg.name)
        names = {
            "config",
            *backend.list("keys"),
            *backend.list("index"),
            *backend.list("snapshots"),
        }
        for snap in repo.snapshots():
            names.update(f"data/{p[:2]}/{p}" for p in snap.manifest.packs)
        until = datetime.now(UTC) + timedelta(days=cfg.retention_days)
        extended = backend.extend_retention(sorted(names), until)
        self.journal_now(
            "backup.retention.extend",
            Category.ADMINISTRATION,
            action=Action.UPDATE,
            objects=(f"BackupRepository/{repo.id}", f"BackupRepositoryName/{cfg.name}"),
        )
        return extended

    # -- restore ---------------------------------------------------------------------------------

    def restore(
        self,
        name: str | None,
        snapshot: str,
        target: Path,
        *,
        salvage: bool = False,
        progress: ProgressFn | None = None,
    ) -> RestoreResult:
        """Restore a snapshot's files into ``target`` (journaled, movement)."""
        cfg = self.config_of(name)
        repo = self.open(cfg.name)
        snap = repo.snapshot(snapshot)
        outcome, severity = Outcome.SUCCESS, Severity.NOTICE
        try:
            result = repo.restore(snap.id, target, salvage=salvage, progress=progress)
            if result.broken:
                outcome, severity = Outcome.MINOR_FAILURE, Severity.WARNING
            return result
        except Exception:
            outcome, severity = Outcome.SERIOUS_FAILURE, Severity.WARNING
            raise
        finally:
            self.journal_now(
                "backup.restore",
                Category.MOVEMENT,
                objects=(f"BackupRepository/{repo.id}", f"BackupSnapshot/{snap.id}"),
                outcome=outcome,
                severity=severity,
            )


def restore_as_platform(
    repo: BackupRepository,
    snapshot: str,
    data_dir: Path,
    database_url: str,
    *,
    salvage: bool = False,
    pg_bin_dir: Path | None = None,
    progress: ProgressFn | None = None,
    step: Step | None = None,
) -> RestoredPlatform:
    """Restore a platform snapshot as a runnable platform (disaster recovery, drills).

    Needs no running platform: ``repo`` may have been opened with the escrow passphrase on a
    new host. The KEK is not restored (it never was backed up): the restored platform opens
    with the KEK provided to it (``docs/backup.md``, PRA runbook).
    """
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".hdsvault-restore-", dir=data_dir.parent))
    try:
        if step:
            step("files")
        repo.restore(snapshot, scratch / "tree", salvage=salvage, progress=progress)
        return restore_platform(
            scratch / "tree", data_dir, database_url, pg_bin_dir=pg_bin_dir, step=step
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def snapshot_manifest(repo: BackupRepository, snap: Snapshot) -> PlatformManifest:
    """Read ``platform/MANIFEST.json`` out of a snapshot without restoring it all."""
    from hdsvault.backup.tree import DIR, FILE, decode_tree

    store = repo.store
    nodes = decode_tree(store.load(bytes.fromhex(snap.manifest.tree)), "root")
    top = next((n for n in nodes if n.display_name == PLATFORM_DIR and n.type == DIR), None)
    if top is None or top.subtree is None:
        raise ObjectMissingError(f"snapshot {snap.id} is not a platform snapshot")
    for node in decode_tree(store.load(top.subtree), PLATFORM_DIR):
        if node.display_name == "MANIFEST.json" and node.type == FILE:
            data = b"".join(store.load(c) for c in node.chunks)
            return PlatformManifest.from_json(data)
    raise ObjectMissingError(f"snapshot {snap.id} has no {PLATFORM_DIR}/MANIFEST.json")


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, default=json_default, ensure_ascii=False)


# --------------------------------------------------------------------------- media, status


def export_to_media(
    service: BackupService,
    name: str | None,
    target: Path,
    label: str,
    *,
    snapshots: list[str] | None = None,
    offsite: bool = True,
    kind: str = "removable",
    progress: ProgressFn | None = None,
) -> Any:
    """``backup export``: write an offline copy, add it to the inventory, journal it."""
    from hdsvault.backup.inventory import MediaInventory
    from hdsvault.backup.offline import export_repository

    cfg = service.config_of(name)
    repo = service.open(cfg.name)
    result = export_repository(
        repo,
        target,
        label=label,
        signing_key=service.signing_key(),
        snapshot_ids=snapshots,
        platform_id=service.platform_id(),
        progress=progress,
    )
    MediaInventory(service.platform.engine).record_export(
        label=label,
        path=str(target.resolve()),
        repository_id=repo.id,
        snapshots=result.snapshots,
        kind=kind,
        offsite=offsite,
    )
    service.journal_now(
        "backup.export",
        Category.MOVEMENT,
        objects=(
            f"BackupRepository/{repo.id}",
            f"BackupMedia/{label}",
            *(f"BackupSnapshot/{s}" for s in result.snapshots),
        ),
    )
    return result


def verify_media(
    service: BackupService,
    label: str,
    path: Path,
    *,
    passphrase: str | None = None,
    progress: ProgressFn | None = None,
) -> Any:
    """``backup media verify``: check an offline copy; update the inventory; journal."""
    from hdsvault.backup.inventory import MediaInventory
    from hdsvault.backup.offline import MediaCheck, verify_export

    inventory = MediaInventory(service.platform.engine)
    if inventory.get(label) is None:
        raise BackupError(f"no medium labelled {label!r} in the inventory (backup media list)")
    try:
        check = verify_export(
            path,
            trusted_keys=service.trusted_keys(),
            kek=None if passphrase else service.kek(),
            passphrase=passphrase,
            label=label,
            progress=progress,
        )
    except BackupError as exc:
        check = MediaCheck(label=label, ok=False, problems=[str(exc)])
    detail = "ok" if check.ok else "; ".join(check.problems)[:20000]
    inventory.record_verification(label, check.ok, detail)
    service.record_check(f"media:{label}", "media", check.ok, len(check.problems), detail)
    service.journal_now(
        "backup.media.verify",
        Category.ADMINISTRATION,
        objects=(f"BackupMedia/{label}",),
        outcome=Outcome.SUCCESS if check.ok else Outcome.SERIOUS_FAILURE,
        severity=Severity.NOTICE if check.ok else Severity.WARNING,
    )
    return check


def protection_status(service: BackupService) -> Any:
    """The 3-2-1-1-0 status of the platform (see :mod:`hdsvault.backup.status`)."""
    from sqlalchemy import desc

    from hdsvault.backup.inventory import MediaInventory, last_checks
    from hdsvault.backup.status import CopyStatus, compute_status
    from hdsvault.db.schema import backup_drills

    engine = service.platform.engine
    checks = last_checks(engine)
    copies: list[CopyStatus] = []
    for cfg in service.settings.backup.repositories:
        check = checks.get(f"repo:{cfg.name}")
        status = CopyStatus(
            name=f"repo:{cfg.name}",
            kind=cfg.kind,
            media=cfg.media or ("object-storage" if cfg.kind == "s3" else "disk"),
            offsite=cfg.offsite if cfg.offsite is not None else cfg.kind == "s3",
            immutable=cfg.kind in ("hardened-local", "s3"),
            offline=False,
            snapshots=0,
            latest=None,
            last_verified=check.time.isoformat() if check else None,
            last_ok=check.ok if check else None,
        )
        try:
            snaps = service.open(cfg.name).snapshots()
            status.snapshots = len(snaps)
            status.latest = snaps[-1].time if snaps else None
        except Exception as exc:
            status.error = str(exc)[:200]
        copies.append(status)
    for m in MediaInventory(engine).list():
        copies.append(
            CopyStatus(
                name=f"media:{m.label}",
                kind="offline",
                media=m.kind,
                offsite=m.offsite,
                immutable=False,
                offline=True,
                snapshots=len(m.snapshots),
                latest=m.written_at.isoformat(),
                last_verified=m.last_verified_at.isoformat() if m.last_verified_at else None,
                last_ok=None if m.last_result == "never" else m.last_result == "ok",
            )
        )
    with read_connection(engine) as conn:
        drill = conn.execute(
            select(backup_drills.c.ok, backup_drills.c.time)
            .order_by(desc(backup_drills.c.time))
            .limit(1)
        ).first()
    return compute_status(
        copies,
        last_drill_ok=bool(drill.ok) if drill else None,
        last_drill_time=str(drill.time) if drill else None,
        max_age_days=service.settings.backup.verification_max_age_days,
    )
