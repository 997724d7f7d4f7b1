"""The platform's journal export (configured sinks, cursor in the database) and retention."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from hdsvault.config import Settings, SiemSinkSettings
from hdsvault.db.schema import export_cursors, journal_entries
from hdsvault.journal import service
from hdsvault.journal.entry import Action
from hdsvault.journal.export import export_to_siem, prune
from hdsvault.platform import Platform

from support.components import require_component
from support.ports import free_port
from support.rsyslog import Rsyslogd, make_pki, missing_rsyslog

SEQ = re.compile(rb'log_id="([^"]+)".*?seq="(\d+)"')


def record_admin_acts(platform: Platform, n: int, log_id: str = "750712184") -> None:
    with platform.engine.begin() as conn:
        for i in range(n):
            service.record(
                conn,
                service.admin_entry("test.act", f"os:op{i}", log_id=log_id, action=Action.EXECUTE),
            )
    service.integrate(platform)


def received(rsyslogd: Rsyslogd) -> set[tuple[str, int]]:
    found = set()
    for line in rsyslogd.lines():
        m = SEQ.search(line)
        if m:
            found.add((m.group(1).decode(), int(m.group(2))))
    return found


@pytest.fixture
def sink_platform(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    problem = missing_rsyslog(tls=True)
    if problem:
        require_component("rsyslog", problem)
    pki = make_pki(tmp_path / "pki")
    rsyslogd = Rsyslogd(tmp_path / "rsyslog", port=free_port(), pki=pki)
    rsyslogd.start()
    sink = SiemSinkSettings(
        name="soc", host="127.0.0.1", port=rsyslogd.port, transport="tls", ca_file=pki.ca
    )
    cfg = settings.model_copy(
        update={"journal": settings.journal.model_copy(update={"siem": [sink]})}
    )
    platform = Platform.open(cfg)
    try:
        yield platform, rsyslogd
    finally:
        platform.close()
        rsyslogd.stop()


def test_export_resumes_from_the_database_cursor_across_a_receiver_restart(sink_platform) -> None:  # type: ignore[no-untyped-def]
    platform, rsyslogd = sink_platform
    record_admin_acts(platform, 30)
    sent = export_to_siem(platform)["soc"]
    assert sent >= 30  # the tenant log's 30, plus the platform log's entries
    rsyslogd.wait_for_lines(lambda lines: len(lines) >= sent)
    with platform.engine.connect() as conn:
        cursors = dict(
            conn.execute(select(export_cursors.c.log_id, export_cursors.c.last_seq)).all()
        )
    assert cursors["750712184"] == 29
    rsyslogd.stop()
    record_admin_acts(platform, 20)  # journaled while the SIEM is down
    with pytest.raises(Exception):
        export_to_siem(platform)
    with platform.engine.connect() as conn:
        assert (
            conn.execute(
                select(export_cursors.c.last_seq).where(export_cursors.c.log_id == "750712184")
            ).scalar_one()
            == 29
        )
    rsyslogd.start()
    export_to_siem(platform)
    rsyslogd.wait_for_lines(
        lambda _: len({s for log, s in received(rsyslogd) if log == "750712184"}) >= 50
    )
    assert {s for log, s in received(rsyslogd) if log == "750712184"} == set(range(50))


def test_prune_keeps_the_log_verifiable_and_early_erasure_is_caught(platform: Platform) -> None:
    record_admin_acts(platform, 40)
    days = platform.settings.journal.retention_days
    assert days >= 183
    assert prune(platform, by="test") == []  # nothing is old enough
    future = datetime.now(UTC) + timedelta(days=days + 1)
    done = prune(platform, by="test", now=future)
    assert {p.log_id: p.entries for p in done}["750712184"] == 40
    service.integrate(platform)
    with platform.engine.connect() as conn:
        actors = set(
            conn.execute(
                select(journal_entries.c.actor).where(journal_entries.c.log_id == "750712184")
            ).scalars()
        )
    assert actors == {""}
    report = service.verify(platform)
    assert report.ok, report.problems
    # Someone empties newer entries by hand, pretending retention did it.
    record_admin_acts(platform, 5)
    with platform.engine.begin() as conn:
        conn.execute(
            update(journal_entries)
            .where(journal_entries.c.log_id == "750712184", journal_entries.c.seq == 42)
            .values(pruned=True, actor="")
        )
    problems = [p for p in service.verify(platform).problems if p.log_id == "750712184"]
    assert problems and problems[0].index == 42 and problems[0].kind == "pruned-unrecorded"


def test_retention_cannot_be_configured_below_six_months(tmp_path: Path) -> None:
    from hdsvault.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="retention_days"):
        load_settings(data_dir=tmp_path, journal={"retention_days": 90})


def test_entries_are_flushed_to_disk_after_they_are_read_and_before_they_are_sent(
    sink_platform, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A SIEM must never hold an entry the journal could still lose in a power cut: on SQLite
    a commit is flushed just after it releases the write lock (``db.engine``), so the export
    flushes the WAL between reading a batch and sending it. The flush is recorded and still
    runs; the sink is a real rsyslog."""
    from hdsvault.journal import export
    from hdsvault.journal.siem.transport import SyslogSender

    platform, _ = sink_platform
    record_admin_acts(platform, 5)
    events: list[str] = []
    real_read, real_flush, real_send = export.entries_after, export.flush_wal, SyslogSender.send

    def read(*args, **kwargs):  # type: ignore[no-untyped-def]
        events.append("read")
        return real_read(*args, **kwargs)

    def flush(engine) -> None:  # type: ignore[no-untyped-def]
        events.append("flush")
        real_flush(engine)

    def send(self, messages) -> None:  # type: ignore[no-untyped-def]
        events.append("send")
        real_send(self, messages)

    monkeypatch.setattr(export, "entries_after", read)
    monkeypatch.setattr(export, "flush_wal", flush)
    monkeypatch.setattr(SyslogSender, "send", send)
    assert export_to_siem(platform)["soc"] >= 5
    assert "send" in events
    for i, event in enumerate(events):
        if event == "send":
            assert events[i - 2 : i] == ["read", "flush"], events
