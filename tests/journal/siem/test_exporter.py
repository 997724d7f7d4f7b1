"""Exporter bookkeeping (cursor, retries, source contract) and the file cursor store.

The transport is exercised against a real rsyslogd in ``test_rsyslog.py``; here a scripted
in-process sender makes failures happen at exact points, which a real receiver cannot.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome
from hdsvault.journal.siem import formats
from hdsvault.journal.siem.exporter import (
    Backoff,
    CursorStoreError,
    FileCursorStore,
    MemoryCursorStore,
    SiemExporter,
    SiemExportError,
)
from hdsvault.journal.siem.transport import TransportError, frame

LOG = "tenant-1"


def entry(seq: int, log_id: str = LOG) -> JournalEntry:
    return JournalEntry(
        log_id=log_id,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        event_type="fhir.read",
        category=Category.ACCESS,
        action=Action.READ,
        outcome=Outcome.SUCCESS,
        actor="token:x",
        seq=seq,
    )


class ScriptedSender:
    """Records what was sent; fails the calls whose index is in ``fail_on``."""

    def __init__(self, fail_on: set[int] | None = None, fail_always: bool = False) -> None:
        self.fail_on = fail_on or set()
        self.fail_always = fail_always
        self.calls = 0
        self.delivered: list[int] = []
        self.closed = 0

    def send(self, messages: Sequence[bytes]) -> None:
        index = self.calls
        self.calls += 1
        if self.fail_always or index in self.fail_on:
            raise TransportError(f"scripted failure on call {index}")
        for message in messages:
            self.delivered.append(int(message.decode()))

    def close(self) -> None:
        self.closed += 1


def source_of(entries: list[JournalEntry]) -> Callable[[int, int], list[JournalEntry]]:
    def source(after_seq: int, limit: int) -> list[JournalEntry]:
        return [e for e in entries if e.seq is not None and e.seq > after_seq][:limit]

    return source


def make(
    entries: list[JournalEntry],
    sender: ScriptedSender,
    store: MemoryCursorStore | FileCursorStore,
    *,
    batch_size: int = 10,
    backoff: Backoff | None = None,
    sleeps: list[float] | None = None,
) -> SiemExporter:
    return SiemExporter(
        source_of(entries),
        sender,
        lambda e: str(e.seq).encode(),
        store,
        "sink",
        batch_size,
        log_id=LOG,
        backoff=backoff or Backoff(initial=0.5, maximum=2.0, retries=3),
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
    )


def test_sends_everything_and_saves_cursor_per_batch() -> None:
    entries = [entry(i) for i in range(25)]
    sender, store = ScriptedSender(), MemoryCursorStore()
    assert store.load("sink", LOG) == -1
    assert make(entries, sender, store).run_once() == 25
    assert sender.delivered == list(range(25))
    assert sender.calls == 3  # 10 + 10 + 5 (short batch ends the run)
    assert store.load("sink", LOG) == 24
    assert make(entries, sender, store).run_once() == 0  # nothing new
    entries.append(entry(25))
    assert make(entries, sender, store).run_once() == 1
    assert sender.delivered[-1] == 25


def test_failure_resends_from_confirmed_cursor_with_backoff() -> None:
    entries = [entry(i) for i in range(30)]
    sleeps: list[float] = []
    sender, store = ScriptedSender(fail_on={1, 2}), MemoryCursorStore()
    assert make(entries, sender, store, sleeps=sleeps).run_once() == 30
    assert sorted(set(sender.delivered)) == list(range(30))
    assert sender.delivered == list(range(30))  # failed calls delivered nothing here
    assert sleeps == [0.5, 1.0]
    assert sender.closed == 2
    assert store.load("sink", LOG) == 29


def test_gives_up_after_bounded_retries_without_moving_cursor() -> None:
    entries = [entry(i) for i in range(30)]
    sleeps: list[float] = []
    sender, store = ScriptedSender(fail_on={1, 2, 3, 4, 5}), MemoryCursorStore()
    exporter = make(entries, sender, store, sleeps=sleeps)
    with pytest.raises(SiemExportError, match="unreachable after 4 attempts") as info:
        exporter.run_once()
    assert info.value.sent == 10
    assert info.value.cursor == 9
    assert store.load("sink", LOG) == 9
    assert sleeps == [0.5, 1.0, 2.0]  # capped at maximum
    # next run picks up where the confirmed cursor is: nothing skipped
    assert exporter.run_once() == 20
    assert sorted(set(sender.delivered)) == list(range(30))


def test_cursor_is_reloaded_from_the_store_after_a_failure() -> None:
    """Whatever the exporter believed in memory, a resend starts at the durable cursor."""
    entries = [entry(i) for i in range(20)]
    store = MemoryCursorStore()

    class RewindingSender(ScriptedSender):
        def send(self, messages: Sequence[bytes]) -> None:
            if self.calls == 1:
                store.save("sink", LOG, 4)  # e.g. an operator rewound the cursor
            super().send(messages)

    sender = RewindingSender(fail_on={1})
    assert make(entries, sender, store, batch_size=10).run_once() == 25
    assert sender.delivered == list(range(10)) + list(range(5, 20))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([entry(0), entry(0)], "increasing"),
        ([entry(1), entry(0)], "increasing"),
        ([entry(0, log_id="other")], "log 'other'"),
        ([entry(-1)], "increasing"),  # not after the cursor (-1)
    ],
)
def test_source_contract_violations_are_refused(bad: list[JournalEntry], message: str) -> None:
    sender, store = ScriptedSender(), MemoryCursorStore()
    exporter = SiemExporter(
        lambda after, limit: bad, sender, lambda e: b"x", store, "sink", log_id=LOG
    )
    with pytest.raises(ValueError, match=message):
        exporter.run_once()
    assert sender.calls == 0
    assert store.load("sink", LOG) == -1


def test_unsequenced_entry_is_refused() -> None:
    unsequenced = JournalEntry(
        log_id=LOG,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        event_type="x",
        category=Category.ACCESS,
        action=Action.READ,
        outcome=Outcome.SUCCESS,
        actor="a",
    )
    exporter = SiemExporter(
        lambda after, limit: [unsequenced],
        ScriptedSender(),
        lambda e: b"x",
        MemoryCursorStore(),
        "sink",
        log_id=LOG,
    )
    with pytest.raises(ValueError, match="not sequenced"):
        exporter.run_once()


def test_too_many_entries_from_source_is_refused() -> None:
    exporter = SiemExporter(
        lambda after, limit: [entry(i) for i in range(limit + 1)],
        ScriptedSender(),
        lambda e: b"x",
        MemoryCursorStore(),
        "sink",
        batch_size=3,
        log_id=LOG,
    )
    with pytest.raises(ValueError, match="limit 3"):
        exporter.run_once()


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        SiemExporter(
            lambda a, b: [],
            ScriptedSender(),
            lambda e: b"",
            MemoryCursorStore(),
            "s",
            0,
            log_id=LOG,
        )


def test_backoff_delays() -> None:
    b = Backoff(initial=0.25, maximum=1.0, retries=5)
    assert [b.delay(n) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_frame_is_octet_counting() -> None:
    assert frame(b"<110>1 - - - - - -") == b"18 <110>1 - - - - - -"
    message = "é".encode()
    assert frame(message) == b"2 " + message  # octets, not characters


def test_exporter_with_a_real_renderer() -> None:
    entries = [entry(i) for i in range(3)]
    sent: list[bytes] = []

    class Collect:
        def send(self, messages: Sequence[bytes]) -> None:
            sent.extend(messages)

        def close(self) -> None:
            pass

    exporter = SiemExporter(
        source_of(entries),
        Collect(),
        formats.bind("rfc5424", hostname="h"),
        MemoryCursorStore(),
        "sink",
        log_id=LOG,
    )
    assert exporter.run_once() == 3
    assert [b'seq="%d"' % i in m for i, m in enumerate(sent)] == [True] * 3


# --------------------------------------------------------------------------- FileCursorStore


def test_file_cursor_store_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cursors.json"
    store = FileCursorStore(path)
    assert store.load("siem-a", LOG) == -1
    store.save("siem-a", LOG, 41)
    store.save("siem-a", "platform", 7)
    store.save("siem-b", LOG, 3)
    again = FileCursorStore(path)  # as after a restart
    assert again.load("siem-a", LOG) == 41
    assert again.load("siem-a", "platform") == 7
    assert again.load("siem-b", LOG) == 3
    assert again.load("siem-c", LOG) == -1
    assert json.loads(path.read_text()) == {
        "siem-a": {LOG: 41, "platform": 7},
        "siem-b": {LOG: 3},
    }
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["cursors.json"]  # no temp file left


def test_file_cursor_store_drives_an_exporter(tmp_path: Path) -> None:
    entries = [entry(i) for i in range(15)]
    store = FileCursorStore(tmp_path / "c.json")
    sender = ScriptedSender(fail_on={1, 2, 3, 4})
    with pytest.raises(SiemExportError):
        make(entries, sender, store).run_once()
    assert FileCursorStore(tmp_path / "c.json").load("sink", LOG) == 9
    assert make(entries, ScriptedSender(), FileCursorStore(tmp_path / "c.json")).run_once() == 5


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"sink": 3}',
        '{"sink": {"log": "3"}}',
        '{"sink": {"log": -2}}',
        '{"sink": {"log": true}}',
        '{"sink": {"log": 1.5}}',
        "\udcff",
    ],
)
def test_file_cursor_store_refuses_malformed_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(CursorStoreError, match=str(path)):
        FileCursorStore(path).load("sink", "log")
    with pytest.raises(CursorStoreError):
        FileCursorStore(path).save("sink", "log", 1)
    assert path.read_bytes() == content.encode("utf-8", "surrogateescape")  # left alone


@pytest.mark.parametrize("seq", [-2, 1.5, True, "3"])
def test_file_cursor_store_refuses_bad_cursor(tmp_path: Path, seq: object) -> None:
    with pytest.raises(ValueError, match="cursor"):
        FileCursorStore(tmp_path / "c.json").save("sink", "log", seq)  # type: ignore[arg-type]
