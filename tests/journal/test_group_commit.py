"""Group commit: concurrent durable appends all land, each caller waits for its own commit."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from hdsvault.db.schema import journal_entries
from hdsvault.journal import group_commit, service
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome
from hdsvault.journal.group_commit import GroupCommitJournal, JournalUnavailable
from hdsvault.platform import Platform


def read_entry(i: int) -> JournalEntry:
    return JournalEntry(
        log_id="750712184",
        time=datetime.now(UTC),
        event_type="fhir.read",
        category=Category.ACCESS,
        action=Action.READ,
        outcome=Outcome.SUCCESS,
        actor=f"token:{i}",
        objects=(f"Patient/{i}",),
        patient=f"Patient/{i}",
    )


def count(platform: Platform) -> int:
    with platform.engine.connect() as conn:
        return conn.execute(
            select(func.count())
            .select_from(journal_entries)
            .where(journal_entries.c.event_type == "fhir.read")
        ).scalar_one()


def test_concurrent_callers_each_return_after_their_commit(platform: Platform, tenant: str) -> None:
    writer = platform.durable_journal()
    seen_after_return: list[bool] = []
    lock = threading.Lock()

    def reader(k: int) -> None:
        for i in range(25):
            writer.record(read_entry(k * 1000 + i))
            # Visible to another connection as soon as record() returned: it is committed.
            with platform.engine.connect() as conn:
                ok = (
                    conn.execute(
                        select(func.count())
                        .select_from(journal_entries)
                        .where(journal_entries.c.actor == f"token:{k * 1000 + i}")
                    ).scalar_one()
                    == 1
                )
            with lock:
                seen_after_return.append(ok)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen_after_return) == 200 and all(seen_after_return)
    assert count(platform) == 200
    service.integrate(platform)
    assert service.verify(platform).ok


def test_a_failed_batch_fails_its_callers(platform: Platform) -> None:
    writer = GroupCommitJournal(platform.engine)
    bad = read_entry(1)
    object.__setattr__(bad, "category", "not-a-category")  # cannot be stored
    with pytest.raises(Exception):
        writer.record(bad)
    writer.record(read_entry(2))  # the writer survives a failed batch
    writer.close()
    with pytest.raises(RuntimeError):
        writer.record(read_entry(3))
    assert count(platform) == 1


def test_submitted_entries_commit_together_and_wait_reports(platform: Platform) -> None:
    writer = GroupCommitJournal(platform.engine)
    try:
        pending = writer.submit([read_entry(10), read_entry(11), read_entry(12)])
        pending.wait()
        assert count(platform) == 3  # durable once wait() returned, all of them
        bad = read_entry(13)
        object.__setattr__(bad, "category", "not-a-category")
        failing = writer.submit([read_entry(14), bad])
        with pytest.raises(Exception):
            failing.wait()
        assert count(platform) == 3  # one batch, one transaction: neither entry was kept
        with pytest.raises(ValueError):
            writer.submit([])
    finally:
        writer.close()


def test_every_failure_to_make_entries_durable_is_one_error(platform: Platform) -> None:
    """Readers catch one exception (JournalUnavailable) for a failed commit, a timeout and a
    closed writer alike, and must then return nothing."""
    from hdsvault.journal.group_commit import JournalUnavailable

    writer = GroupCommitJournal(platform.engine)
    bad = read_entry(20)
    object.__setattr__(bad, "category", "not-a-category")
    with pytest.raises(JournalUnavailable) as failed:
        writer.submit([bad]).wait()
    assert failed.value.__cause__ is not None  # what the commit raised is kept
    writer.close()
    with pytest.raises(JournalUnavailable):
        writer.submit([read_entry(21)])


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a server can cut it
def test_a_connection_cut_while_idle_is_replaced_without_losing_a_batch(
    platform: Platform,
) -> None:
    """The writer keeps its connection between batches; PostgreSQL ending it (a restart, a
    failover, an administrator) must not fail the next reader: its batch runs on a fresh
    connection. Real server, real termination of every other backend of the database."""
    writer = GroupCommitJournal(platform.engine)
    try:
        writer.record(read_entry(30))  # the writer's connection is open, idle
        with platform.engine.connect() as conn:
            cut = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert cut >= 1
        writer.record(read_entry(31))
        writer.record(read_entry(32))
    finally:
        writer.close()
    assert count(platform) == 3


def test_done_callbacks_run_once_whenever_they_are_added(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event loop waits for its entries through a callback, not a blocked thread: each
    callback runs exactly once, whether added before the commit (by the writer) or after
    (at once); one that raises does not stop the writer, and a failed batch calls them too."""
    writer = GroupCommitJournal(platform.engine)
    calls: list[str] = []
    release = threading.Event()
    append_many = group_commit.append_many

    def held(*args: object) -> object:
        assert release.wait(10)
        return append_many(*args)

    monkeypatch.setattr(group_commit, "append_many", held)
    try:
        pending = writer.submit([read_entry(40)])
        pending.add_done_callback(lambda: calls.append("before"))
        pending.add_done_callback(lambda: 1 / 0)  # logged, the writer goes on
        assert calls == []
        release.set()
        pending.wait()
        pending.add_done_callback(lambda: calls.append("after"))
        assert calls == ["before", "after"]
        bad = read_entry(41)
        object.__setattr__(bad, "category", "not-a-category")
        failing = writer.submit([bad])
        failed: list[bool] = []
        failing.add_done_callback(lambda: failed.append(failing.error is not None))
        with pytest.raises(JournalUnavailable):
            failing.wait()
        assert failed == [True]
        writer.record(read_entry(42))  # still writing
    finally:
        release.set()
        writer.close()
    assert count(platform) == 2


def test_entries_queued_without_waking_wait_for_the_wake_and_share_its_commit(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``submit(..., wake=False)`` (an event loop queuing the entries of the requests it has
    ready): the idle writer is not woken by them; one ``wake()`` commits them all, in one
    transaction (one batch for every caller)."""
    monkeypatch.setattr(group_commit, "UNWOKEN_LIMIT", 5.0)  # no backstop during the test
    writer = GroupCommitJournal(platform.engine)
    try:
        writer.record(read_entry(50))  # the writer is idle after this
        first = writer.submit([read_entry(51)], wake=False)
        second = writer.submit([read_entry(52), read_entry(53)], wake=False)
        assert second is first  # one batch
        assert not first.done.wait(0.3)  # not woken: not committed
        assert count(platform) == 1
        writer.wake()
        first.wait(5)
        assert count(platform) == 4
        writer.wake()  # nothing queued: nothing happens
        writer.record(read_entry(54))  # a woken submission still commits at once
        assert count(platform) == 5
    finally:
        writer.close()


def test_entries_never_woken_are_committed_after_the_limit(platform: Platform) -> None:
    """A wake-up the caller never makes costs a delay (UNWOKEN_LIMIT), not a reader's
    time-out: the writer looks at the open batch that often."""
    writer = GroupCommitJournal(platform.engine)
    try:
        pending = writer.submit([read_entry(60)], wake=False)
        pending.wait(5)
        assert count(platform) == 1
    finally:
        writer.close()
