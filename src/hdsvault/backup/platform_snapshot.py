"""A consistent copy of the whole platform, ready to be backed up, and its way back.

Why a staging copy rather than backing up the live files: a database file copied while it is
written is not a database. Each backend gives a point-in-time image instead:

* SQLite: the online backup API (``sqlite3.Connection.backup``) copies the pages of one
  consistent read transaction into a temporary file; writers are not blocked for long.
* PostgreSQL: one ``REPEATABLE READ`` transaction exports its snapshot
  (``pg_export_snapshot()``); ``pg_dump --format=custom --snapshot=<id>`` dumps exactly that
  state, and the manifest's record counts and journal sizes are read *in the same
  transaction* — so the counts a drill compares against describe the dump, not "about then".
  (A ``pg_basebackup`` + WAL archive gives point-in-time recovery; that is the job of
  replication, ``continuity/``; the logical dump is portable across major versions and
  restorable into any empty database, which is what a restore drill and a reversibility
  export need.)

Besides the database (which holds the journal), the staging directory receives the latest
signed checkpoint of every journal log as files (a restored platform can be checked against
them, and an auditor can read them without a database), the configuration file **minus its
secrets** (``kek.pkcs11.pin``, S3 secret keys: re-entered at restore), and ``MANIFEST.json``:
record counts per tenant and type, journal sizes, the KEK *id* and the SHA-256 of every
staged file. The KEK itself is never staged: a backup must be useless to whoever steals it.
Blob directories (``<data_dir>/blobs``, imaging) are backed up in place beside the staging
directory: they are write-once content-addressed files, consistent by construction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, func, select, text
from sqlalchemy.engine import make_url

from hdsvault import __version__
from hdsvault.backup.config import format_time
from hdsvault.backup.errors import BackupError, RestoreError
from hdsvault.db.schema import (
    journal_checkpoints,
    journal_logs,
    resource_versions,
    resources,
    tenants,
)

__all__ = [
    "BLOBS_DIR",
    "PLATFORM_DIR",
    "PlatformManifest",
    "RestoredPlatform",
    "find_pg_tool",
    "read_counts",
    "restore_platform",
    "snapshot_platform",
    "strip_secrets",
]

PLATFORM_DIR = "platform"
"""Name of the staging directory inside a snapshot (its root tree has one node per path)."""
BLOBS_DIR = "blobs"
SQLITE_FILE = "database/hdsvault.sqlite"
PG_DUMP_FILE = "database/hdsvault.pgdump"
MANIFEST_FILE = "MANIFEST.json"
CONFIG_FILE = "config/hdsvault.toml"
Step = Callable[[str], None]

# Secrets that never leave the host inside a backup (dotted TOML paths).
_SECRET_KEYS = (("kek", "pkcs11", "pin"), ("backup", "repositories", "secret_access_key"))


@dataclass
class PlatformManifest:
    """``MANIFEST.json``: what the snapshot holds, for restores and drills to compare."""

    platform_id: str
    time: str
    database: str
    """``sqlite`` or ``postgresql``."""
    kek_id: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Current (not deleted) resources per tenant and type."""
    versions: dict[str, int] = field(default_factory=dict)
    """Stored resource versions per tenant (history included)."""
    tenants: list[str] = field(default_factory=list)
    journal: dict[str, int] = field(default_factory=dict)
    """Sequenced entries per journal log."""
    checkpoints: dict[str, int] = field(default_factory=dict)
    """Tree size of the latest signed checkpoint per log."""
    files: dict[str, str] = field(default_factory=dict)
    """Staged file -> SHA-256."""
    blobs: bool = False
    config: bool = False
    hdsvault_version: str = __version__
    format: int = 1

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PlatformManifest:
        doc = json.loads(data)
        if doc.get("format") != 1:
            raise BackupError("platform manifest of an unknown format")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})

    @property
    def total_resources(self) -> int:
        return sum(n for types in self.counts.values() for n in types.values())


# --------------------------------------------------------------------------- counts


def read_counts(conn: Connection) -> dict[str, Any]:
    """Counts, tenants, journal sizes and checkpoints, from one connection (one snapshot)."""
    counts: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        select(resources.c.tenant_id, resources.c.resource_type, func.count())
        .where(resources.c.deleted.is_(False))
        .group_by(resources.c.tenant_id, resources.c.resource_type)
    )
    for tenant, rtype, n in rows:
        counts.setdefault(str(tenant), {})[str(rtype)] = int(n)
    versions = {
        str(t): int(n)
        for t, n in conn.execute(
            select(resource_versions.c.tenant_id, func.count()).group_by(
                resource_versions.c.tenant_id
            )
        )
    }
    tenant_ids = sorted(str(t) for (t,) in conn.execute(select(tenants.c.id)))
    journal = {str(r.log_id): int(r.size) for r in conn.execute(select(journal_logs))}
    checkpoints: dict[str, int] = {}
    notes: dict[str, str] = {}
    latest = (
        select(journal_checkpoints.c.log_id, func.max(journal_checkpoints.c.size).label("size"))
        .group_by(journal_checkpoints.c.log_id)
        .subquery()
    )
    for log_id, size, note in conn.execute(
        select(
            journal_checkpoints.c.log_id, journal_checkpoints.c.size, journal_checkpoints.c.note
        ).join(
            latest,
            (latest.c.log_id == journal_checkpoints.c.log_id)
            & (latest.c.size == journal_checkpoints.c.size),
        )
    ):
        checkpoints[str(log_id)] = int(size)
        notes[str(log_id)] = str(note)
    return {
        "counts": counts,
        "versions": versions,
        "tenants": tenant_ids,
        "journal": journal,
        "checkpoints": checkpoints,
        "notes": notes,
    }


# --------------------------------------------------------------------------- secrets


def strip_secrets(toml_text: str) -> str:
    """The configuration file without the PKCS#11 PIN and S3 secret keys.

    Line-based (comments and layout stay as the operator wrote them): a ``pin = ...`` line in
    ``[kek.pkcs11]`` (or ``pkcs11.pin`` in ``[kek]``, ``kek.pkcs11.pin`` at top level) and a
    ``secret_access_key = ...`` line in ``[[backup.repositories]]`` are replaced by a comment.
    The result is parsed again and refused if a secret survived (an unusual layout, e.g. an
    inline table): better no configuration in the backup than a leaked PIN.
    """
    out: list[str] = []
    table = ""
    header = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"-]+)\s*\]\]?\s*(#.*)?$")
    for line in toml_text.splitlines():
        m = header.match(line)
        if m:
            table = m.group(1).replace('"', "")
            out.append(line)
            continue
        key = line.split("=", 1)[0].strip().replace('"', "") if "=" in line else ""
        full = f"{table}.{key}" if table and key else key
        if full in ("kek.pkcs11.pin", "backup.repositories.secret_access_key"):
            out.append(f"# {key} removed by hdsvault backup (secrets are never backed up)")
            continue
        out.append(line)
    stripped = "\n".join(out) + "\n"
    try:
        doc = tomllib.loads(stripped)
    except tomllib.TOMLDecodeError as exc:
        raise BackupError(f"configuration file is not valid TOML: {exc}") from None
    pkcs11 = doc.get("kek", {}).get("pkcs11", {})
    repos = doc.get("backup", {}).get("repositories", [])
    if (isinstance(pkcs11, dict) and "pin" in pkcs11) or any(
        isinstance(r, dict) and "secret_access_key" in r for r in repos
    ):
        raise BackupError(
            "cannot strip the secrets from the configuration file (inline table?): write "
            "kek.pkcs11.pin and secret_access_key on their own lines, or set them by "
            "environment variables"
        )
    return stripped


# --------------------------------------------------------------------------- PostgreSQL tools


def find_pg_tool(name: str, bin_dir: Path | None = None) -> str:
    """Path of ``pg_dump``/``pg_restore``: configured dir, else the newest Debian one, else PATH."""
    if bin_dir is not None:
        return str(bin_dir / name)
    found: list[tuple[int, Path]] = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if d.parent.name.isdigit() and (d / name).is_file():
            found.append((int(d.parent.name), d / name))
    if found:
        return str(max(found)[1])
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} not found: install the PostgreSQL client or set backup.pg_bin_dir"
        )
    return path


def _libpq(url: str) -> tuple[list[str], dict[str, str]]:
    """``pg_*`` connection arguments and environment for a SQLAlchemy URL (password in env)."""
    u = make_url(url)
    args = ["--host", u.host or "localhost", "--port", str(u.port or 5432)]
    if u.username:
        args += ["--username", u.username]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    env["PGCONNECT_TIMEOUT"] = "10"
    return args, env


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=6 * 3600)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-1500:]
        raise BackupError(f"{what} failed (exit {proc.returncode}): {err}")


# --------------------------------------------------------------------------- snapshot


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _sqlite_copy(url: str, target: Path) -> dict[str, Any]:
    source = make_url(url).database
    if not source:
        raise BackupError("in-memory SQLite databases cannot be backed up")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=4096)
    finally:
        dst.close()
        src.close()
    engine = create_engine(f"sqlite:///{target}")
    try:
        with engine.connect() as conn:
            return read_counts(conn)
    finally:
        engine.dispose()


def _pg_dump(url: str, target: Path, pg_bin_dir: Path | None) -> dict[str, Any]:
    engine = create_engine(url, isolation_level="REPEATABLE READ", poolclass=None)
    try:
        with engine.connect() as conn:
            conn.execute(text("SET TRANSACTION READ ONLY"))
            snapshot_id = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            args, env = _libpq(url)
            dbname = make_url(url).database or "postgres"
            _run(
                [
                    find_pg_tool("pg_dump", pg_bin_dir),
                    *args,
                    "--no-password",
                    "--format=custom",
                    f"--snapshot={snapshot_id}",
                    f"--file={target}",
                    dbname,
                ],
                env,
                "pg_dump",
            )
            facts = read_counts(conn)  # same transaction, same snapshot as the dump
            conn.rollback()
            return facts
    finally:
        engine.dispose()


def snapshot_platform(
    *,
    database_url: str,
    platform_id: str,
    kek_id: str,
    staging: Path,
    config_file: Path | None = None,
    pg_bin_dir: Path | None = None,
    step: Step | None = None,
) -> PlatformManifest:
    """Fill ``staging`` (a new directory named :data:`PLATFORM_DIR`) with a consistent image."""
    staging.mkdir(mode=0o700)
    (staging / "database").mkdir(mode=0o700)
    now = format_time(datetime.now(UTC))
    if step:
        step("database")
    if database_url.startswith("sqlite"):
        kind = "sqlite"
        facts = _sqlite_copy(database_url, staging / SQLITE_FILE)
    else:
        kind = "postgresql"
        facts = _pg_dump(database_url, staging / PG_DUMP_FILE, pg_bin_dir)
    if step:
        step("journal checkpoints")
    cp_dir = staging / "journal" / "checkpoints"
    cp_dir.mkdir(parents=True, mode=0o700)
    for log_id, note in sorted(facts["notes"].items()):
        (cp_dir / f"{log_id}.note").write_text(note)
    manifest = PlatformManifest(
        platform_id=platform_id,
        time=now,
        database=kind,
        kek_id=kek_id,
        counts=facts["counts"],
        versions=facts["versions"],
        tenants=facts["tenants"],
        journal=facts["journal"],
        checkpoints=facts["checkpoints"],
    )
    if config_file is not None and config_file.is_file():
        if step:
            step("configuration")
        (staging / "config").mkdir(mode=0o700)
        (staging / CONFIG_FILE).write_text(strip_secrets(config_file.read_text()))
        manifest.config = True
    for dirpath, _dirs, files in os.walk(staging):
        for name in files:
            path = Path(dirpath, name)
            manifest.files[path.relative_to(staging).as_posix()] = _sha256(path)
    (staging / MANIFEST_FILE).write_bytes(manifest.to_json())
    return manifest


# --------------------------------------------------------------------------- restore


@dataclass
class RestoredPlatform:
    """What :func:`restore_platform` put where, and how it compares with the manifest."""

    manifest: PlatformManifest
    data_dir: Path
    database_url: str
    counts: dict[str, Any]
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def load_manifest(tree: Path) -> PlatformManifest:
    """Read and check ``MANIFEST.json`` and the staged files it lists (SHA-256)."""
    root = tree / PLATFORM_DIR
    try:
        manifest = PlatformManifest.from_json((root / MANIFEST_FILE).read_bytes())
    except (OSError, ValueError) as exc:
        raise RestoreError(f"not a platform snapshot ({MANIFEST_FILE}: {exc})") from None
    for rel, digest in manifest.files.items():
        path = root / rel
        if not path.is_file() or _sha256(path) != digest:
            raise RestoreError(f"restored {PLATFORM_DIR}/{rel} does not match MANIFEST.json")
    return manifest


def compare_counts(manifest: PlatformManifest, facts: dict[str, Any]) -> list[str]:
    """Differences between the manifest's counts and those read from a restored database."""
    problems: list[str] = []
    for key in ("counts", "versions", "tenants", "journal"):
        want, got = getattr(manifest, key), facts[key]
        if want != got:
            problems.append(f"{key}: snapshot has {want}, restored database has {got}")
    return problems


def _pg_restore(dump: Path, url: str, pg_bin_dir: Path | None) -> None:
    u = make_url(url)
    admin = u.set(database="postgres")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": u.database}
            ).first()
            if exists is None:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", u.database or ""):
                    raise RestoreError(f"cannot create database {u.database!r}: not a plain name")
                conn.execute(text(f'CREATE DATABASE "{u.database}"'))
    finally:
        engine.dispose()
    target = create_engine(url)
    try:
        with target.connect() as conn:
            n = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
    finally:
        target.dispose()
    if n:
        raise RestoreError(
            f"database {u.database} is not empty ({n} tables): restore into a new database, "
            "or drop this one first"
        )
    args, env = _libpq(url)
    _run(
        [
            find_pg_tool("pg_restore", pg_bin_dir),
            *args,
            "--no-password",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={u.database}",
            str(dump),
        ],
        env,
        "pg_restore",
    )


def _empty_sqlite(path: Path) -> bool:
    """A SQLite file with no table at all (what a failed open of a missing database leaves)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]) == 0
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def restore_platform(
    tree: Path,
    data_dir: Path,
    database_url: str,
    *,
    pg_bin_dir: Path | None = None,
    step: Step | None = None,
) -> RestoredPlatform:
    """Turn a restored snapshot tree into a platform: database, blobs, reference config.

    ``tree`` is the directory a snapshot was restored into (it holds :data:`PLATFORM_DIR` and
    maybe :data:`BLOBS_DIR`); files are *moved* from it. ``data_dir`` must not hold a database
    already; for PostgreSQL ``database_url`` must name an absent or empty database. The KEK is
    not in the snapshot: the caller provides it to whatever opens the restored platform.
    """
    manifest = load_manifest(tree)
    root = tree / PLATFORM_DIR
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if step:
        step("database")
    if manifest.database == "sqlite":
        if not database_url.startswith("sqlite"):
            raise RestoreError("the snapshot holds a SQLite database; restore it to a sqlite URL")
        target = Path(make_url(database_url).database or "")
        if target.exists() and not _empty_sqlite(target):
            raise RestoreError(f"{target} exists: refusing to overwrite a database")
        for leftover in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
            leftover.unlink(missing_ok=True)  # an empty database a failed start-up created
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.move(root / SQLITE_FILE, target)
    else:
        if not database_url.startswith("postgresql"):
            raise RestoreError("the snapshot holds a PostgreSQL dump; restore it to PostgreSQL")
        _pg_restore(root / PG_DUMP_FILE, database_url, pg_bin_dir)
    if (tree / BLOBS_DIR).is_dir():
        if step:
            step("blobs")
        if (data_dir / BLOBS_DIR).exists():
            raise RestoreError(f"{data_dir / BLOBS_DIR} exists: refusing to merge blobs")
        shutil.move(tree / BLOBS_DIR, data_dir / BLOBS_DIR)
    reference = data_dir / "restored"
    reference.mkdir(exist_ok=True, mode=0o700)
    for rel in (MANIFEST_FILE, CONFIG_FILE):
        if (root / rel).is_file():
            shutil.copy2(root / rel, reference / Path(rel).name)
    if (root / "journal").is_dir():
        with contextlib.suppress(FileExistsError):
            shutil.copytree(root / "journal", reference / "journal")
    if step:
        step("counts")
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            facts = read_counts(conn)
    finally:
        engine.dispose()
    facts.pop("notes", None)
    return RestoredPlatform(
        manifest, data_dir, database_url, facts, compare_counts(manifest, facts)
    )
