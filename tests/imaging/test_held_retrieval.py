"""WADO-RS retrievals served on the event loop (api/held_retrieval): which ones, with the same
answers and traces as the worker-thread path, and never a byte before the trace is durable."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from imaging_helpers import (
    ACCEPT,
    TENANT,
    assert_withheld,
    radiologist_auth,
    rows_in,
    stow_study,
    study_files,
)

from hdsvault.api import dicomweb, held_retrieval
from hdsvault.api.app import create_app
from hdsvault.api.listeners import ListenerGroup, plan
from hdsvault.db.schema import journal_entries
from hdsvault.imaging import multipart
from hdsvault.journal import group_commit
from hdsvault.platform import Platform

from support.ports import free_port


def _thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the retrievals handed to a worker thread (the path that is not the loop's)."""
    hops: list[int] = []
    in_thread = dicomweb._in_thread

    def noted(work: Callable[[], Any]) -> Awaitable[Any]:
        hops.append(1)
        return in_thread(work)

    monkeypatch.setattr(dicomweb, "_in_thread", noted)
    return hops


def _same(a: httpx.Response, b: httpx.Response) -> bool:
    """The same multipart body but for the random boundary."""
    boundaries = [
        multipart.content_type_params(r.headers["content-type"])[1]["boundary"] for r in (a, b)
    ]
    return a.content.replace(boundaries[0].encode(), b"B") == b.content.replace(
        boundaries[1].encode(), b"B"
    )


def test_which_retrievals_are_served_on_the_loop(
    platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite, a retrieval by a local token that the policy allows, within the loop's
    budget, with every blob read with the lookup or held in the caches, is served on the
    loop: the same body as through a worker thread, journaled the same way (one entry,
    committed once the answer is there). Everything else takes the thread: PostgreSQL (a
    read is a network round trip), HEAD, a refused token or establishment (their refusal is
    journaled there), a study over the budget, a blob that must be read from its file."""
    sqlite = platform.engine.dialect.name == "sqlite"
    app = create_app(platform)
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(3)
    url = f"/dicomweb/{TENANT}/studies/{study}"
    hops = _thread_hops(monkeypatch)
    with TestClient(app) as client:
        stow_study(client, auth, files)

        def served(headers: dict[str, str], status: int = 200, path: str = url) -> Any:
            hops.clear()
            entries = rows_in(platform, journal_entries)
            r = client.get(path, headers=headers)
            assert r.status_code == status, r.text
            assert rows_in(platform, journal_entries) == entries + 1  # durable with the answer
            return r, "thread" if hops else "loop"

        on_loop, how = served({**auth, **ACCEPT})
        assert how == ("loop" if sqlite else "thread")
        assert on_loop.content.count(b"DICM") == 3
        instance = client.get(f"/dicomweb/{TENANT}/studies/{study}/instances", headers=auth)
        sop = instance.json()[0]["00080018"]["Value"][0]
        series = instance.json()[0]["0020000E"]["Value"][0]
        one = f"{url}/series/{series}/instances/{sop}"
        assert served({**auth, **ACCEPT}, path=one)[1] == ("loop" if sqlite else "thread")

        monkeypatch.setattr(held_retrieval, "LOOP_BODY", 0)  # over the budget
        through_thread, how = served({**auth, **ACCEPT})
        assert how == "thread" and _same(on_loop, through_thread)
        monkeypatch.undo()
        hops = _thread_hops(monkeypatch)

        assert served({"Authorization": "Bearer hdsv_x_y", **ACCEPT}, 401)[1] == "thread"
        assert served({**auth, **ACCEPT}, 403, f"/dicomweb/130786049/studies/{study}")[1] == (
            "thread"
        )
        hops.clear()
        head = client.head(url, headers={**auth, **ACCEPT})
        assert head.status_code == 200 and hops == [1]
        hops.clear()
        assert client.get(url, headers={**auth, "Accept": "application/json"}).status_code == 406
        assert hops == [1]  # refused by the thread's path, as before


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the loop: SQLite only
def test_blobs_read_from_files_take_the_thread_until_held(
    platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instances stored as files (not inline): a retrieval that would read them takes the
    thread; once their sealed blobs are in the process cache, the loop serves it, byte for
    byte the same."""
    app = create_app(platform)
    store = dicomweb.ImagingStore(platform)
    store.inline_max = 0  # every instance a file
    cached = store.file_cache.max_bytes
    store.file_cache.max_bytes = 0  # nothing held until the first retrieval
    app.state.imaging_store = store
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(3)
    url = f"/dicomweb/{TENANT}/studies/{study}"
    hops = _thread_hops(monkeypatch)
    try:
        with TestClient(app) as client:
            stow_study(client, auth, files)
            store.file_cache.max_bytes = cached
            hops.clear()
            first = client.get(url, headers={**auth, **ACCEPT})
            assert first.status_code == 200 and hops == [1]  # read from the files
            hops.clear()
            second = client.get(url, headers={**auth, **ACCEPT})
            assert second.status_code == 200 and hops == []  # held now
            assert _same(first, second)
    finally:
        store.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the loop: SQLite only
@pytest.mark.parametrize("level", ["study", "instance"])
def test_a_retrieval_waiting_for_its_trace_holds_neither_a_thread_nor_the_loop(
    platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    """On a real listener: while the journal's flush of a retrieval served on the loop is
    held, the loop answers other requests, no worker thread waits for it, and not a byte of
    the study leaves (invariant 2); released, the study arrives whole. A flush that does not
    end in time gets 503 and nothing of the study. Both ways the loop's writer is woken: at
    once (a study), once the loop is idle (one instance, IdleWake)."""
    app = create_app(platform)
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(3)
    url = f"/dicomweb/{TENANT}/studies/{study}"
    group = ListenerGroup(app, platform.settings, plan(platform.settings, "127.0.0.1", free_port()))
    group.start_in_thread()
    flushing, release = threading.Event(), threading.Event()
    append_many = group_commit.append_many

    def held_flush(*args: Any) -> Any:
        flushing.set()
        assert release.wait(30)
        return append_many(*args)

    try:
        base = f"http://127.0.0.1:{group.listeners[0].port}"
        with httpx.Client(base_url=base) as client:  # not TestClient: its exit would close
            stow_study(client, auth, files)  # the platform (the application's lifespan)
            expected = 3
            if level == "instance":
                found = client.get(f"{url}/instances", headers=auth).json()[0]
                series, sop = found["0020000E"]["Value"][0], found["00080018"]["Value"][0]
                url, expected = f"{url}/series/{series}/instances/{sop}", 1
        hops = _thread_hops(monkeypatch)
        monkeypatch.setattr(group_commit, "append_many", held_flush)
        answers: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answers.append(httpx.get(base + url, headers={**auth, **ACCEPT}))
        )
        waiting.start()
        assert flushing.wait(10)
        started = time.monotonic()
        assert httpx.get(base + "/healthz").status_code == 200  # the loop is free
        assert time.monotonic() - started < 5
        time.sleep(0.2)
        assert answers == [] and hops == []  # nothing sent, no thread taken
        release.set()
        waiting.join(30)
        assert answers[0].status_code == 200 and answers[0].content.count(b"DICM") == expected

        release.clear()
        flushing.clear()
        monkeypatch.setattr(held_retrieval, "JOURNAL_WAIT_SECONDS", 0.3)
        late = httpx.get(base + url, headers={**auth, **ACCEPT})
        assert_withheld(late, files)
        assert hops == []
        release.set()
    finally:
        release.set()
        group.stop()
        group.join()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the loop: SQLite only
def test_retrievals_on_the_loop_wake_the_writer_once_the_loop_is_idle(
    platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single-instance retrieval served on the loop queues its entry without waking the
    journal's writer, and the loop wakes it once it has nothing else ready
    (api/loop_calls.IdleWake), so that the retrievals it had ready share one commit and one
    flush. On a real listener, eight concurrent ones: every one answered whole, each
    journaled once, never an entry left behind. A study's retrieval wakes the writer at once
    (its flush runs while its instances are decrypted)."""
    app = create_app(platform)
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(3)
    url = f"/dicomweb/{TENANT}/studies/{study}"
    journal = platform.durable_journal()
    submitted: list[bool] = []
    woken: list[int] = []
    submit, wake = journal.submit, journal.wake

    def noted_submit(entries: Any, *, wake: bool = True) -> Any:
        submitted.append(wake)
        return submit(entries, wake=wake)

    def noted_wake() -> None:
        woken.append(1)
        wake()

    group = ListenerGroup(app, platform.settings, plan(platform.settings, "127.0.0.1", free_port()))
    group.start_in_thread()
    try:
        base = f"http://127.0.0.1:{group.listeners[0].port}"
        monkeypatch.setattr(journal, "submit", noted_submit)
        monkeypatch.setattr(journal, "wake", noted_wake)
        with httpx.Client(base_url=base) as client:
            stow_study(client, auth, files)
            submitted.clear()
            assert client.get(url, headers={**auth, **ACCEPT}).status_code == 200
            assert submitted == [True]  # a study: the writer woken at once
            found = client.get(f"/dicomweb/{TENANT}/studies/{study}/instances", headers=auth)
            one = [
                f"{url}/series/{i['0020000E']['Value'][0]}/instances/{i['00080018']['Value'][0]}"
                for i in found.json()
            ]
        submitted.clear()
        woken.clear()
        hops = _thread_hops(monkeypatch)
        entries = rows_in(platform, journal_entries)
        answers: list[httpx.Response] = []

        def fetch(k: int) -> None:
            path = one[k % len(one)]
            answers.append(httpx.get(base + path, headers={**auth, **ACCEPT}, timeout=30))

        clients = [threading.Thread(target=fetch, args=(k,)) for k in range(8)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(30)
        assert [r.status_code for r in answers] == [200] * 8
        assert all(r.content.count(b"DICM") == 1 for r in answers)
        assert hops == []  # all on the loop
        assert submitted == [False] * 8  # queued without waking the writer...
        assert 1 <= len(woken) <= 8  # ...which the loop woke once idle
        assert rows_in(platform, journal_entries) == entries + 8
    finally:
        group.stop()
        group.join()
