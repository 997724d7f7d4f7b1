"""Moving the journal out: SIEM export with a persistent cursor, and retention pruning.

SIEM export is at least once: the cursor of each (sink, log) lives in ``export_cursors`` and
only moves after a batch was written to the receiver, so a receiver or process restart loses
nothing (duplicates are possible; every message carries ``<log_id>:<seq>`` to drop them).

Retention prunes the *content* of old entries, never their place in the tree: a pruned row
keeps its index, leaf hash and MAC, so proofs and ``journal verify`` still hold. Only entries
older than ``journal.retention_days`` (at least 6 months), covered by a signed checkpoint and
already exported to every sink that exports their log may be pruned; pruning is journaled.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, insert, select, update

from hdsvault.config import SiemSinkSettings
from hdsvault.db.engine import flush_wal, read_connection
from hdsvault.db.schema import export_cursors, journal_checkpoints, journal_entries
from hdsvault.journal.entry import JournalEntry, Severity
from hdsvault.journal.service import admin_entry, record
from hdsvault.journal.siem import formats
from hdsvault.journal.siem.exporter import SiemExporter
from hdsvault.journal.siem.transport import SyslogSender, TlsConfig
from hdsvault.journal.store import entries_after
from hdsvault.journal.verify import all_log_ids
from hdsvault.platform import Platform


class DbCursorStore:
    """Export cursors in the database: they travel with backups and replicas."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load(self, sink_name: str, log_id: str) -> int:
        with read_connection(self._engine) as conn:
            value = conn.execute(
                select(export_cursors.c.last_seq).where(
                    export_cursors.c.sink == sink_name, export_cursors.c.log_id == log_id
                )
            ).scalar_one_or_none()
        return -1 if value is None else int(value)

    def save(self, sink_name: str, log_id: str, seq: int) -> None:
        with self._engine.begin() as conn:
            updated = conn.execute(
                update(export_cursors)
                .where(export_cursors.c.sink == sink_name, export_cursors.c.log_id == log_id)
                .values(last_seq=seq)
            ).rowcount
            if not updated:
                conn.execute(
                    insert(export_cursors).values(sink=sink_name, log_id=log_id, last_seq=seq)
                )


def _sender(sink: SiemSinkSettings) -> SyslogSender:
    tls = None
    if sink.transport == "tls":
        assert sink.ca_file is not None  # checked by the settings model
        tls = TlsConfig(ca_file=sink.ca_file, cert_file=sink.cert_file, key_file=sink.key_file)
    return SyslogSender(sink.host, sink.port, tls=tls)


def _logs_of(sink: SiemSinkSettings, logs: list[str]) -> list[str]:
    return logs if "*" in sink.logs else [log for log in logs if log in sink.logs]


def export_to_siem(platform: Platform, only: str | None = None) -> dict[str, int]:
    """Send every sequenced entry not yet confirmed to each configured sink; returns counts."""
    sinks = [s for s in platform.settings.journal.siem if only in (None, s.name)]
    cursors = DbCursorStore(platform.engine)
    with read_connection(platform.engine) as conn:
        logs = all_log_ids(conn)
    hostname = socket.gethostname()
    sent: dict[str, int] = {}
    for sink in sinks:
        renderer = formats.bind(sink.format, hostname=hostname)
        sender = _sender(sink)
        try:
            for log_id in _logs_of(sink, logs):

                def source(after: int, limit: int, log_id: str = log_id) -> list[JournalEntry]:
                    with read_connection(platform.engine) as conn:
                        entries = entries_after(conn, log_id, after, limit)
                    # What was read is on disk before it is sent (a SIEM must not hold an
                    # entry the journal could lose in a power cut: db.engine.DurableConnection).
                    flush_wal(platform.engine)
                    return entries

                exporter = SiemExporter(source, sender, renderer, cursors, sink.name, log_id=log_id)
                sent[sink.name] = sent.get(sink.name, 0) + exporter.run_once()
        finally:
            sender.close()
    return sent


@dataclass(frozen=True)
class Pruned:
    log_id: str
    up_to_seq: int  # entries [0, up_to_seq) are pruned
    entries: int


def prune(platform: Platform, *, by: str, now: datetime | None = None) -> list[Pruned]:
    """Remove the content of entries past retention that are checkpointed and exported."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=platform.settings.journal.retention_days)
    cursors = DbCursorStore(platform.engine)
    sinks = platform.settings.journal.siem
    done = []
    with read_connection(platform.engine) as conn:
        logs = all_log_ids(conn)
    for log_id in logs:
        with platform.engine.begin() as conn:
            signed = (
                conn.execute(
                    select(func.max(journal_checkpoints.c.size)).where(
                        journal_checkpoints.c.log_id == log_id
                    )
                ).scalar_one_or_none()
                or 0
            )
            exported = min(
                [cursors.load(s.name, log_id) + 1 for s in sinks if _logs_of(s, [log_id])],
                default=signed,
            )
            too_young = conn.execute(
                select(func.min(journal_entries.c.seq)).where(
                    journal_entries.c.log_id == log_id,
                    journal_entries.c.seq.is_not(None),
                    journal_entries.c.time >= cutoff,
                )
            ).scalar_one_or_none()
            limit = min(signed, exported, signed if too_young is None else too_young)
            count = conn.execute(
                update(journal_entries)
                .where(
                    journal_entries.c.log_id == log_id,
                    journal_entries.c.seq < limit,
                    journal_entries.c.pruned.is_(False),
                )
                .values(
                    pruned=True,
                    actor="",
                    actor_role=None,
                    professional_id=None,
                    on_behalf_of=None,
                    objects="[]",
                    patient=None,
                    purpose_of_use=None,
                    source_address=None,
                    zone=None,
                    request_id=None,
                    detail_sealed=None,
                )
            ).rowcount
            if count:
                record(
                    conn,
                    admin_entry(
                        "journal.prune",
                        by,
                        objects=(f"JournalLog/{log_id}", f"PrunedBefore/{limit}"),
                        severity=Severity.NOTICE,
                    ),
                )
                done.append(Pruned(log_id, limit, count))
    return done
