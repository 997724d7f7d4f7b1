"""Restore drills: prove, for real and regularly, that a snapshot becomes a serving platform.

Why a drill rather than a verify: ``verify --read-data`` proves the bytes are intact; only a
restore proves that those bytes, plus the KEK, plus this version of hdsvault, give back a
platform that starts, serves the records and whose journal verifies — and how long that
takes (the RTO an establishment commits to in its PRA). Veeam's SureBackup does the same for
virtual machines.

One :class:`RestoreDrill` run:

1. picks a snapshot (latest, a given one, or a random one);
2. restores it into a scratch directory as a platform (SQLite file, or a scratch PostgreSQL
   database ``hdsvault_drill_<id>`` on the source server, dropped afterwards);
3. starts a real ``hdsvault serve`` process on a free loopback port on it — with the **same
   KEK** as the source (the file path, or the HSM slot; the drill host must have it: see
   ``docs/backup.md``) — and waits until ``/readyz`` answers;
4. compares record counts per tenant and type: restored = snapshot manifest (must hold), and
   source now >= snapshot (informational: the source moved on since);
5. sample reads through the FHIR API with a drill token (role ``service``) created *in the
   scratch platform*, checking id and version, and that the stored ciphertext is byte-identical
   to the source's (so no clinical data of the source is ever decrypted by the drill);
6. runs the journal verification on the restored platform and checks that the checkpoints
   saved with the snapshot are found, identical, in the restored journal;
7. stops everything, removes the scratch data, and writes the report: JSON, signed with the
   platform's backup-signing key, stored in ``backup_drills`` and journaled (``drill.run``),
   with a short summary in French (default) or English.

The **RTO** is the wall-clock time from the drill's start to the end of step 6: a restored,
serving and verified platform.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from hdsvault.backup.config import format_time
from hdsvault.backup.errors import BackupError
from hdsvault.backup.platform_snapshot import read_counts
from hdsvault.backup.service import BackupService, public_key_b64, restore_as_platform
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import backup_drills, journal_checkpoints, resource_versions, resources
from hdsvault.journal.entry import Action, Category, Outcome, Severity

__all__ = ["DrillReport", "RestoreDrill", "list_drills", "verify_report_signature"]

SIGNATURE_PREFIX = b"hdsvault-drill-report-v1\n"
Step = Callable[[str], None]


@dataclass
class SampleRead:
    tenant: str
    resource: str
    status: int
    ok: bool
    detail: str = ""


@dataclass
class DrillReport:
    """What a drill did and found. Canonical JSON of this is what gets signed."""

    id: str
    started_at: str
    finished_at: str = ""
    repository: str = ""
    repository_id: str = ""
    snapshot: str = ""
    snapshot_seq: int = 0
    snapshot_time: str = ""
    database: str = ""
    rto_seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    counts_snapshot: dict[str, dict[str, int]] = field(default_factory=dict)
    counts_restored: dict[str, dict[str, int]] = field(default_factory=dict)
    counts_source: dict[str, dict[str, int]] = field(default_factory=dict)
    counts_match: bool = False
    source_behind: list[str] = field(default_factory=list)
    sample_reads: list[SampleRead] = field(default_factory=list)
    journal_verified: bool = False
    journal_logs: dict[str, int] = field(default_factory=dict)
    journal_problems: list[str] = field(default_factory=list)
    server_ready_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    ok: bool = False
    lang: str = "fr"
    summary: str = ""
    signer_public_key: str = ""

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DrillReport:
        doc = dict(doc)
        doc["sample_reads"] = [SampleRead(**s) for s in doc.get("sample_reads", [])]
        return cls(**doc)

    @property
    def total_resources(self) -> int:
        return sum(n for t in self.counts_restored.values() for n in t.values())


def summarize(report: DrillReport) -> str:
    """A few lines for the operator and the PRA file, in French (default) or English."""
    reads_ok = sum(1 for r in report.sample_reads if r.ok)
    n = len(report.sample_reads)
    total = report.total_resources
    if report.lang == "en":
        verdict = "SUCCESS" if report.ok else "FAILURE"
        lines = [
            f"Restore drill {report.id}: {verdict}.",
            f"Snapshot {report.snapshot[:12]} (seq {report.snapshot_seq}, {report.snapshot_time})"
            f" of repository {report.repository}, {report.database} database.",
            f"Recovery time (RTO): {report.rto_seconds:.1f} s to a verified serving platform.",
            f"Records: {total} resources restored, counts "
            f"{'match' if report.counts_match else 'DIFFER from'} the snapshot manifest.",
            f"Sample reads through the API: {reads_ok}/{n} correct.",
            f"Journal: {'verified' if report.journal_verified else 'VERIFICATION FAILED'}.",
        ]
        lines += [f"Problem: {p}" for p in report.problems]
    else:
        verdict = "RÉUSSI" if report.ok else "ÉCHEC"
        lines = [
            f"Exercice de restauration {report.id} : {verdict}.",
            f"Sauvegarde {report.snapshot[:12]} (n° {report.snapshot_seq}, "
            f"{report.snapshot_time}) du dépôt {report.repository}, base {report.database}.",
            f"Durée de reprise (RTO) : {report.rto_seconds:.1f} s jusqu'à une plateforme "
            "servie et vérifiée.",
            f"Données : {total} ressources restaurées, décomptes "
            f"{'conformes au' if report.counts_match else 'DIFFÉRENTS du'} manifeste.",
            f"Lectures de contrôle par l'API : {reads_ok}/{n} correctes.",
            f"Journal : {'vérifié' if report.journal_verified else 'VÉRIFICATION EN ÉCHEC'}.",
        ]
        lines += [f"Problème : {p}" for p in report.problems]
    return "\n".join(lines)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _hdsvault_command() -> list[str]:
    script = Path(sys.executable).parent / "hdsvault"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from hdsvault.cli.main import app; app()"]


class RestoreDrill:
    """One restore drill of a repository of ``service``'s platform (see the module doc)."""

    def __init__(
        self,
        service: BackupService,
        repository: str | None = None,
        *,
        scratch_root: Path | None = None,
        lang: str = "fr",
        sample_reads: int | None = None,
        server_timeout: float = 90.0,
    ) -> None:
        self.service = service
        self.settings = service.settings
        self.repository = repository
        self.scratch_root = scratch_root
        self.lang = lang if lang in ("fr", "en") else "fr"
        self.samples = (
            self.settings.backup.drill_sample_reads if sample_reads is None else sample_reads
        )
        self.server_timeout = server_timeout

    # -- the run -----------------------------------------------------------------------------

    def run(
        self, snapshot: str | None = None, *, pick_random: bool = False, step: Step | None = None
    ) -> DrillReport:
        t0 = time.perf_counter()
        report = DrillReport(
            id=secrets.token_hex(8), started_at=format_time(datetime.now(UTC)), lang=self.lang
        )
        marks: dict[str, float] = {}

        def mark(name: str) -> None:
            marks[name] = round(time.perf_counter() - t0, 3)
            if step:
                step(name)

        cfg = self.service.config_of(self.repository)
        report.repository = cfg.name
        repo = self.service.open(cfg.name)
        report.repository_id = repo.id
        snaps = repo.snapshots()
        if not snaps:
            raise BackupError(f"repository {cfg.name} has no snapshot to drill")
        if pick_random:
            snap = random.SystemRandom().choice(snaps)
        else:
            snap = repo.snapshot(snapshot or "latest")
        report.snapshot, report.snapshot_seq, report.snapshot_time = snap.id, snap.seq, snap.time
        root = self.scratch_root or Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"hdsvault-drill-{report.id}-", dir=root))
        source_url = self.settings.database_url
        pg = not source_url.startswith("sqlite")
        drill_db = f"hdsvault_drill_{report.id}"
        url = (
            make_url(source_url).set(database=drill_db).render_as_string(hide_password=False)
            if pg
            else f"sqlite:///{scratch / 'data' / 'hdsvault.db'}"
        )
        server: subprocess.Popen[bytes] | None = None
        opened: Any = None
        try:
            mark("start")
            restored = restore_as_platform(
                repo,
                snap.id,
                scratch / "data",
                url,
                pg_bin_dir=self.settings.backup.pg_bin_dir,
            )
            mark("restored")
            report.database = restored.manifest.database
            report.counts_snapshot = restored.manifest.counts
            report.counts_restored = restored.counts["counts"]
            report.counts_match = restored.ok
            report.problems += restored.mismatches
            config = self._write_config(scratch, url)
            opened = self._open_platform(config)
            port = _free_port()
            server = self._start_server(config, port, scratch)
            base = f"http://127.0.0.1:{port}"
            report.server_ready_seconds = self._wait_ready(base, server, scratch)
            mark("serving")
            self._sample_reads(report, opened, base)
            mark("sample reads")
            self._check_journal(report, opened, scratch / "data" / "restored" / "journal")
            mark("journal verified")
            report.rto_seconds = round(time.perf_counter() - t0, 3)
            self._compare_source(report)
        except Exception as exc:
            report.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            if opened is not None:
                opened.close()
            if pg:
                self._drop_database(source_url, drill_db)
            shutil.rmtree(scratch, ignore_errors=True)
        mark("cleaned up")
        report.steps = marks
        report.finished_at = format_time(datetime.now(UTC))
        reads_ok = all(r.ok for r in report.sample_reads)
        report.ok = (
            not report.problems
            and report.counts_match
            and report.journal_verified
            and reads_ok
            and report.rto_seconds > 0
        )
        if not reads_ok:
            report.problems.append("some sample reads failed")
            report.ok = False
        report.summary = summarize(report)
        self._sign_and_record(report)
        return report

    # -- steps ---------------------------------------------------------------------------------

    def _write_config(self, scratch: Path, url: str) -> Path:
        kek = self.settings.kek
        lines = [
            f"data_dir = {_toml_str(str(scratch / 'data'))}",
            "[database]",
            f"url = {_toml_str(url)}",
            "[logging]",
            'level = "warning"',
            "[kek]",
            f"provider = {_toml_str(kek.provider)}",
        ]
        if kek.provider == "file":
            lines += ["[kek.file]", f"path = {_toml_str(str(self.settings.kek_file.resolve()))}"]
        elif kek.pkcs11 is not None:  # the PIN goes by environment, never to disk
            p = kek.pkcs11
            lines += [
                "[kek.pkcs11]",
                f"module = {_toml_str(str(p.module))}",
                f"token_label = {_toml_str(p.token_label)}",
                f"key_label = {_toml_str(p.key_label)}",
            ]
        path = scratch / "drill.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HDSVAULT_")}
        p = self.settings.kek.pkcs11
        if self.settings.kek.provider == "pkcs11" and p is not None:
            env["HDSVAULT_KEK__PKCS11__PIN"] = p.pin.get_secret_value()
        return env

    def _open_platform(self, config: Path) -> Any:
        from hdsvault.config import load_settings
        from hdsvault.platform import Platform

        overrides: dict[str, Any] = {}
        p = self.settings.kek.pkcs11
        if self.settings.kek.provider == "pkcs11" and p is not None:
            overrides["kek"] = {
                "provider": "pkcs11",
                "pkcs11": {
                    "module": str(p.module),
                    "token_label": p.token_label,
                    "key_label": p.key_label,
                    "pin": p.pin.get_secret_value(),
                },
            }
        return Platform.open(load_settings(config, **overrides))

    def _start_server(self, config: Path, port: int, scratch: Path) -> subprocess.Popen[bytes]:
        log = open(scratch / "server.log", "wb")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(
            [
                *_hdsvault_command(),
                "--config",
                str(config),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=scratch,
        )

    def _wait_ready(self, base: str, server: subprocess.Popen[bytes], scratch: Path) -> float:
        start = time.perf_counter()
        deadline = start + self.server_timeout
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if server.poll() is not None:
                    tail = (scratch / "server.log").read_bytes()[-1500:].decode(errors="replace")
                    raise BackupError(f"the restored server exited ({server.returncode}): {tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(base + "/readyz").status_code == 200:
                        return round(time.perf_counter() - start, 3)
                time.sleep(0.1)
        raise BackupError(f"the restored server was not ready within {self.server_timeout:.0f} s")

    def _sample_reads(self, report: DrillReport, opened: Any, base: str) -> None:
        from hdsvault.access.roles import Role
        from hdsvault.access.tokens import create_token

        rng = random.SystemRandom()
        source = self.service.platform.engine
        with read_connection(opened.engine) as conn:
            rows = conn.execute(
                select(
                    resources.c.tenant_id,
                    resources.c.resource_type,
                    resources.c.resource_id,
                    resources.c.version_id,
                ).where(resources.c.deleted.is_(False))
            ).all()
        by_tenant: dict[str, list[Any]] = {}
        for r in rows:
            by_tenant.setdefault(str(r.tenant_id), []).append(r)
        with httpx.Client(timeout=30.0) as client:
            for tenant, items in sorted(by_tenant.items()):
                token = create_token(
                    opened.engine,
                    tenant=tenant,
                    role=Role.SERVICE,
                    ttl=timedelta(hours=1),
                    by=f"{self.service.actor} (restore drill {report.id})",
                    label=f"restore drill {report.id}",
                ).token
                for r in rng.sample(items, min(self.samples, len(items))):
                    report.sample_reads.append(
                        self._read_one(client, base, token, source, opened.engine, r)
                    )

    def _read_one(
        self, client: httpx.Client, base: str, token: str, source: Any, restored: Any, r: Any
    ) -> SampleRead:
        ref = f"{r.resource_type}/{r.resource_id}"
        res = client.get(
            f"{base}/fhir/{r.tenant_id}/{ref}", headers={"Authorization": f"Bearer {token}"}
        )
        read = SampleRead(str(r.tenant_id), ref, res.status_code, False)
        if res.status_code != 200:
            read.detail = f"HTTP {res.status_code}"
            return read
        body = res.json()
        version = str(body.get("meta", {}).get("versionId", ""))
        if body.get("resourceType") != r.resource_type or body.get("id") != r.resource_id:
            read.detail = "served resource has another type or id"
            return read
        if version != str(r.version_id):
            read.detail = f"served version {version}, stored {r.version_id}"
            return read

        def cipher(engine: Any) -> bytes | None:
            with read_connection(engine) as conn:
                value = conn.execute(
                    select(resource_versions.c.body).where(
                        resource_versions.c.tenant_id == r.tenant_id,
                        resource_versions.c.resource_type == r.resource_type,
                        resource_versions.c.resource_id == r.resource_id,
                        resource_versions.c.version_id == r.version_id,
                    )
                ).scalar_one_or_none()
            return bytes(value) if value is not None else None

        mine, theirs = cipher(restored), cipher(source)
        if theirs is None:
            read.ok, read.detail = True, "served; version no longer in the source"
        elif hashlib.sha256(mine or b"").digest() != hashlib.sha256(theirs).digest():
            read.detail = "stored ciphertext differs from the source's"
        else:
            read.ok, read.detail = True, "served; ciphertext identical to the source"
        return read

    def _check_journal(self, report: DrillReport, opened: Any, saved: Path) -> None:
        from hdsvault.journal.service import verify

        result = verify(opened)
        report.journal_logs = {log.log_id: log.entries for log in result.logs}
        report.journal_problems = [str(p) for p in result.problems][:50]
        ok = result.ok
        checkpoints = saved / "checkpoints"
        with read_connection(opened.engine) as conn:
            for note_file in sorted(checkpoints.glob("*.note")) if checkpoints.is_dir() else []:
                note = note_file.read_text()
                found = conn.execute(
                    select(journal_checkpoints.c.note).where(
                        journal_checkpoints.c.log_id == note_file.stem,
                        journal_checkpoints.c.note == note,
                    )
                ).first()
                if found is None:
                    ok = False
                    report.journal_problems.append(
                        f"checkpoint of log {note_file.stem} saved with the snapshot is not in "
                        "the restored journal"
                    )
        report.journal_verified = ok
        if not ok:
            report.problems.append("journal verification failed on the restored platform")

    def _compare_source(self, report: DrillReport) -> None:
        with read_connection(self.service.platform.engine) as conn:
            now = read_counts(conn)["counts"]
        report.counts_source = now
        for tenant, types in report.counts_snapshot.items():
            for rtype, n in types.items():
                have = now.get(tenant, {}).get(rtype, 0)
                if have < n:
                    report.source_behind.append(
                        f"{tenant}/{rtype}: source has {have}, snapshot {n} (deleted since?)"
                    )

    def _drop_database(self, source_url: str, name: str) -> None:
        admin = make_url(source_url).set(database="postgres")
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception:  # noqa: S110 (a leftover scratch database is reported by the DBA)
            pass
        finally:
            engine.dispose()

    def _sign_and_record(self, report: DrillReport) -> None:
        key = self.service.signing_key()
        report.signer_public_key = public_key_b64(key.public_key())
        body = report.canonical()
        signature = base64.b64encode(key.sign(SIGNATURE_PREFIX + body)).decode()
        engine = self.service.platform.engine
        with engine.begin() as conn:
            conn.execute(
                insert(backup_drills).values(
                    id=report.id,
                    time=datetime.now(UTC),
                    repository=report.repository,
                    snapshot=report.snapshot,
                    ok=report.ok,
                    rto_ms=int(report.rto_seconds * 1000),
                    report=body.decode(),
                    signature=signature,
                )
            )
            self.service.journal(
                conn,
                "drill.run",
                Category.ADMINISTRATION,
                objects=(
                    f"DrillReport/{report.id}",
                    f"BackupRepository/{report.repository_id}",
                    f"BackupSnapshot/{report.snapshot}",
                ),
                outcome=Outcome.SUCCESS if report.ok else Outcome.SERIOUS_FAILURE,
                severity=Severity.NOTICE if report.ok else Severity.WARNING,
                action=Action.EXECUTE,
            )


def list_drills(engine: Any) -> list[tuple[DrillReport, str]]:
    """Every stored drill report with its signature, newest first."""
    with read_connection(engine) as conn:
        rows = conn.execute(select(backup_drills).order_by(backup_drills.c.time.desc())).all()
    return [(DrillReport.from_json(json.loads(r.report)), r.signature) for r in rows]


def verify_report_signature(report_json: bytes, signature_b64: str, key: Ed25519PublicKey) -> bool:
    """Whether ``signature_b64`` signs exactly ``report_json`` (the canonical report)."""
    try:
        key.verify(base64.b64decode(signature_b64), SIGNATURE_PREFIX + report_json)
        return True
    except (InvalidSignature, ValueError):
        return False
