"""Waking an event loop from another thread (a retrieval's producer thread, the journal's
writer), for the loop's coroutines that wait on a future or an event; and waking the
journal's writer from the loop once the loop has nothing else ready."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any


def call_on(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    """``callback(*args)`` on ``loop``, from another thread; nothing if the loop is closed
    (nobody waits on it any more)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def settle(future: asyncio.Future[None]) -> None:
    """``future`` done, unless it is already (on the loop: :func:`call_on`)."""
    if not future.done():
        future.set_result(None)


IDLE_WAIT_LIMIT = 0.005
"""Seconds :class:`IdleWake` waits at most for the loop to have nothing else ready."""


class IdleWake:
    """Calls ``wake()`` (the journal writer's) once the event loop has nothing else ready to
    run, or :data:`IDLE_WAIT_LIMIT` after it was asked, whichever comes first.

    Why: a retrieval served on the loop queues its journal entry, then waits for it to be
    flushed. Woken at once, the writer committed each entry alone (1.25 entries per commit at
    concurrency 4): the loop was still busy with the next requests, which queued theirs just
    after. Woken once the loop has run every request that was ready, one commit and one flush
    carry them all (3.7 entries per commit at concurrency 4 on one HTTP process; server CPU
    per single-instance retrieval 1.48-1.51 -> 0.83-0.89 ms, docs/imaging-bench.md). A retrieval
    alone waits for nothing more.

    "Nothing else ready" is read from asyncio's own loop (its ``_ready`` queue of callbacks,
    not a public attribute); a loop without one (uvloop, another implementation) wakes the
    writer at its next turn, as if it were idle.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        self.loop = loop
        self.wake = wake
        self._asked: float | None = None  # when the pending wake-up was asked for

    def ask(self) -> None:
        """Wake the writer once the loop is idle (one wake-up for every ask before it)."""
        if self._asked is None:
            self._asked = time.monotonic()
            self.loop.call_soon(self._check)

    def _check(self) -> None:
        assert self._asked is not None
        busy = getattr(self.loop, "_ready", None)
        if busy and time.monotonic() - self._asked < IDLE_WAIT_LIMIT:
            self.loop.call_soon(self._check)
            return
        self._asked = None
        self.wake()
