"""api/loop_calls.IdleWake: the journal's writer woken once the event loop has nothing else
ready, on a real asyncio loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from hdsvault.api import loop_calls
from hdsvault.api.loop_calls import IdleWake


def test_the_wake_comes_once_the_ready_callbacks_have_run() -> None:
    """Asked while other callbacks are ready (the requests the loop has yet to serve), the
    wake-up comes after them, once for every ask made before it."""

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        idle = IdleWake(loop, lambda: seen.append("wake"))

        def request(n: int, hops: int) -> None:  # a request served in several loop turns
            if hops:
                loop.call_soon(request, n, hops - 1)
            else:
                seen.append(f"request {n}")
                idle.ask()

        for n in range(3):
            loop.call_soon(request, n, n * 2)
        await asyncio.sleep(0.05)
        idle.ask()  # a later ask: a wake-up of its own
        await asyncio.sleep(0.05)
        return seen

    assert asyncio.run(scenario()) == ["request 0", "request 1", "request 2", "wake", "wake"]


def test_a_loop_never_idle_still_wakes_within_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop that always has something ready (here a callback rescheduling itself) does not
    hold the wake-up back beyond IDLE_WAIT_LIMIT."""
    monkeypatch.setattr(loop_calls, "IDLE_WAIT_LIMIT", 0.02)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        busy = True

        def spin() -> None:
            if busy:
                loop.call_soon(spin)

        spin()
        asked = time.monotonic()
        IdleWake(loop, lambda: woken.set_result(time.monotonic())).ask()
        try:
            return await asyncio.wait_for(woken, 5) - asked
        finally:
            busy = False

    assert 0.02 <= asyncio.run(scenario()) < 1
