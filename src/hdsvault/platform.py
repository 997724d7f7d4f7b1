"""The running platform: settings, database engine and keyring, opened once per process.

Every face (CLI, HTTP server) opens one :class:`Platform` at start and hands it to the services.
Opening refuses to start, with a message saying what to do, when the KEK is missing or exposed,
when the database is not initialised, or when the KEK cannot open the stored keys.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, insert, select, text

from hdsvault.config import Settings
from hdsvault.crypto.kek import KeyEncryptionKey, load_kek
from hdsvault.crypto.keyring import Keyring
from hdsvault.db import migrate
from hdsvault.db.engine import create_db_engine, is_sqlite, read_connection
from hdsvault.db.schema import platform_info
from hdsvault.journal.group_commit import GroupCommitJournal
from hdsvault.journal.signer import MAC_PURPOSE, SIGNING_PURPOSE, JournalSigner


class PlatformNotReady(Exception):
    """The platform cannot start; the message says why and what to run."""


@dataclass
class Platform:
    settings: Settings
    engine: Engine
    keyring: Keyring
    _signer: JournalSigner | None = field(default=None, repr=False)
    _group_commit: GroupCommitJournal | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, settings: Settings) -> Platform:
        """Open an initialised platform, checking KEK, schema and key unwrapping."""
        kek = load_kek(settings.kek, settings.kek_file)
        engine = create_db_engine(settings.database_url, pool_size=settings.database.pool_size)
        try:
            if not migrate.is_up_to_date(engine):
                raise PlatformNotReady(
                    f"database {engine.url.render_as_string(hide_password=True)} is not "
                    "initialised or not up to date: run `hdsvault init`"
                )
            keyring = Keyring(engine, kek)
            with read_connection(engine) as conn:
                keyring.check(conn)
        except Exception:
            engine.dispose()
            raise
        return cls(settings, engine, keyring)

    def close(self) -> None:
        if self._group_commit is not None:
            self._group_commit.close()
        self.engine.dispose()

    def durable_journal(self) -> GroupCommitJournal:
        """Durable appends shared by concurrent requests (group commit), for reads."""
        with self._lock:
            if self._group_commit is None:
                self._group_commit = GroupCommitJournal(self.engine)
            return self._group_commit

    def journal_signer(self) -> JournalSigner:
        """The platform's checkpoint-signing and leaf-MAC keys (unwrapped once per process)."""
        if self._signer is None:
            with read_connection(self.engine) as conn:
                self._signer = JournalSigner.from_secrets(
                    platform_id(conn),
                    self.keyring.platform_secret(conn, SIGNING_PURPOSE),
                    self.keyring.platform_secret(conn, MAC_PURPOSE),
                )
        return self._signer

    def is_ready(self) -> bool:
        """Database reachable, schema current, KEK opens the stored keys (for ``/readyz``)."""
        try:
            with read_connection(self.engine) as conn:
                conn.execute(text("SELECT 1"))
                self.keyring.check(conn)
            return migrate.is_up_to_date(self.engine)
        except Exception:
            return False

    def vacuum_keys(self) -> None:
        """Make deleted key rows physically unrecoverable from the database files.

        SQLite runs with ``secure_delete`` (freed content is zeroed); a TRUNCATE checkpoint also
        drops the write-ahead log that still held the old pages. PostgreSQL keeps dead tuples
        until VACUUM, so the key table is vacuumed.
        """
        if is_sqlite(self.engine):
            raw = self.engine.raw_connection()  # outside any transaction, as the pragma needs
            try:
                raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
            finally:
                raw.close()
        else:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM tenant_keys")


def init_platform(settings: Settings) -> list[str]:
    """Create what a new platform needs (data dir, KEK, schema, journal keys); idempotent."""
    done: list[str] = []
    if not settings.data_dir.exists():
        settings.data_dir.mkdir(parents=True, mode=0o700)
        done.append(f"created data directory {settings.data_dir}")
    if settings.kek.provider == "file" and not settings.kek_file.exists():
        from hdsvault.crypto.kek import FileKEK

        FileKEK.create(settings.kek_file)
        done.append(f"created key-encryption key {settings.kek_file} (mode 0600)")
    elif settings.kek.provider == "pkcs11" and settings.kek.pkcs11 is not None:
        from hdsvault.crypto.pkcs11_kek import Pkcs11KEK

        p = settings.kek.pkcs11
        Pkcs11KEK.ensure_key(str(p.module), p.token_label, p.pin.get_secret_value(), p.key_label)
        done.append(f"HSM key {p.key_label} present in token {p.token_label}")
    kek: KeyEncryptionKey = load_kek(settings.kek, settings.kek_file)
    engine = create_db_engine(settings.database_url)
    try:
        if not migrate.is_up_to_date(engine):
            migrate.upgrade(engine)
            done.append(
                "database schema migrated to " + ", ".join(sorted(migrate.head_revisions()))
            )
        keyring = Keyring(engine, kek)
        with engine.begin() as conn:
            if (
                conn.execute(
                    select(platform_info.c.value).where(platform_info.c.name == "platform_id")
                ).first()
                is None
            ):
                conn.execute(
                    insert(platform_info).values(name="platform_id", value=secrets.token_hex(8))
                )
                done.append("platform identity created")
            for purpose in (SIGNING_PURPOSE, MAC_PURPOSE):
                if keyring.ensure_platform_secret(conn, purpose):
                    done.append(f"platform key {purpose} created")
    finally:
        engine.dispose()
    return done


def platform_id(conn: Connection) -> str:
    """The random identifier of this platform (journal origins, backup repositories)."""
    value = conn.execute(
        select(platform_info.c.value).where(platform_info.c.name == "platform_id")
    ).scalar_one_or_none()
    if value is None:
        raise PlatformNotReady("platform identity missing: run `hdsvault init`")
    return str(value)
