"""Periodic background tasks: they run, survive a failing tick, and run once more at stop."""

from __future__ import annotations

import threading

from hdsvault.periodic import PeriodicTask


def test_a_failing_tick_does_not_stop_the_task() -> None:
    calls: list[int] = []
    twice = threading.Event()

    def work() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first tick fails")
        twice.set()

    task = PeriodicTask("test-task", 0.01, work)
    task.start()
    assert twice.wait(5), "the task stopped after its first failure"
    task.stop()
    stopped_at = len(calls)
    threading.Event().wait(0.05)
    assert len(calls) == stopped_at  # nothing runs after stop()


def test_final_run_at_stop() -> None:
    calls: list[int] = []
    task = PeriodicTask("test-final", 3600, lambda: calls.append(1), final_run=True)
    task.start()
    task.stop()
    assert calls == [1]
