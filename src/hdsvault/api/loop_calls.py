"""Waking an event loop from another thread (a retrieval's producer thread, the journal's
writer), for the loop's coroutines that wait on a future or an event."""

from __future__ import annotations

import asyncio
import contextlib
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
