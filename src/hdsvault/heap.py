"""The server process's heap, settled once it has started.

Why: CPython's cyclic garbage collector traverses every container object it tracks at each
full (generation 2) collection, with the interpreter lock held. A started server holds a few
hundred thousand such objects that live as long as it does (modules, FastAPI's routes and
models, SQLAlchemy's tables, pydicom's dictionaries, pynetdicom's presentation contexts), so
each full collection stalled every thread (HTTP requests, C-STOREs, MLLP messages) for
77-100 ms on the bench machine. Full collections come on their own (allocation counts) and
from pynetdicom, whose association server calls ``gc.collect()`` every 60 passes of its
accept loop (about every 30 s, sooner under traffic).

:func:`freeze_startup_heap` collects once, then moves what is alive into the collector's
permanent generation (``gc.freeze``): those objects are never traversed again, and a full
collection costs what the objects made since cost (8-17 ms measured, the same workload).
Garbage made later is collected as before; the frozen objects are the ones that would have
stayed alive anyway. Called by the serving commands once they are ready (``hdsvault serve``
in the application's start-up, each worker included; ``hdsvault dicom serve`` / ``hl7
serve`` once listening), not by the library: a test process that builds many applications
would keep each one's objects for good.
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger("hdsvault.heap")


def freeze_startup_heap() -> int:
    """Collect, then freeze every object alive; returns how many are frozen (logged)."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("heap.frozen", objects=frozen)
    return frozen
