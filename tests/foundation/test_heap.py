"""The serving process's heap, frozen once started (hdsvault.heap)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from hdsvault.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def frozen() -> Iterator[int]:
    try:
        yield freeze_startup_heap()
    finally:
        gc.unfreeze()  # this test process goes on building applications


def test_what_lives_at_start_is_left_out_of_later_collections() -> None:
    alive = [_Node()]
    assert any(o is alive for o in gc.get_objects())
    try:
        count = freeze_startup_heap()
        assert count >= 1 and gc.get_freeze_count() == count
        assert not any(o is alive for o in gc.get_objects())  # never traversed again
    finally:
        gc.unfreeze()


def test_garbage_made_after_the_freeze_is_still_collected(frozen: int) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
