"""WADO-RS retrievals served on the event loop itself, when that waits for nothing.

Why: a retrieval handed to a worker thread and back costs the loop a submission, a wake-up
by the thread's result, and the interpreter lock passed back and forth, per request; with
retrievals of one instance (what viewers ask most) that was ~15 % of the server's CPU per
request (1.16-1.20 -> 0.98-1.03 ms, docs/imaging-bench.md). Served here,
the loop does the lookup and the decryption, and waits for the journal's flush without any
thread blocked in it: the journal's writer wakes the loop (:meth:`Pending.add_done_callback`).
A single instance's entry is queued without waking the writer, which the loop wakes once it
has nothing else ready (:class:`IdleWake`), so that the requests it had ready share a flush.

When: only when nothing on the way can wait on a file, a lock or the network, so that the
loop's other requests are held for the CPU work alone (at most ~1-2 ms, :data:`LOOP_BODY`):

- the database is SQLite (a read is a call into a local file), read on one connection kept
  for the loop (:class:`KeptReadConnection`: no pool to wait for);
- the credential is a local API token that authenticates (an OpenID Connect JWT may need its
  issuer's keys fetched; a client certificate is mapped elsewhere), and the policy allows;
- the retrieval totals at most :data:`LOOP_BODY` bytes, every blob read with the lookup
  (inline) or held in the process caches (:func:`retrieve.located_held`).

On PostgreSQL (a read is a network round trip) the same retrieval has its reads and its
decryption in one worker-thread hop, the token and the lookup in one transaction of one
pooled connection, and the loop waits for the journal as above: one check-out (and its
pre-ping) and one thread blocked in the flush fewer than the endpoint's own path.

Anything else (every refusal, which must be journaled durably before it is answered, and
every other case above) returns None before anything is journaled, and the endpoint takes
its own worker-thread path, which decides, journals and answers exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy import Connection
from starlette.requests import Request

from hdsvault.access.decision import Operation
from hdsvault.access.tokens import PREFIX, InvalidToken, Principal, authenticate
from hdsvault.api.auth import bearer_token
from hdsvault.api.loop_calls import IdleWake, call_on, settle
from hdsvault.db.engine import KeptReadConnection, read_transaction
from hdsvault.imaging import journaling, retrieve
from hdsvault.imaging.errors import ImagingError
from hdsvault.imaging.store import ImagingStore
from hdsvault.journal.group_commit import Pending
from hdsvault.records.model import Caller

LOOP_BODY = 4 * 1024 * 1024
"""The largest retrieval opened on the loop (~1-2 ms of decryption); a larger one takes the
worker thread, where opening it overlaps the loop's other requests."""

JOURNAL_WAIT_SECONDS = 30.0
"""How long a retrieval waits for its journal entry, as :meth:`Pending.wait` does."""

_T = TypeVar("_T")


class InThread(Protocol):
    """How the endpoint runs ``work`` in a worker thread (its pool, its request's context)."""

    def __call__(self, work: Callable[[], _T]) -> Awaitable[_T]: ...


@dataclass(frozen=True)
class _Opened:
    caller: Caller
    found: retrieve.Located
    body: bytearray | None
    failure: ImagingError | None


async def held_retrieval(
    request: Request,
    store: ImagingStore,
    caller_of: Callable[[Principal], Caller | None],
    uids: retrieve.Uids,
    layout: retrieve.Layout,
    in_memory: int,
    in_thread: InThread,
) -> tuple[Caller, retrieve.Retrieval] | None:
    """The retrieval of ``uids``, opened and journaled durably, or None: take the endpoint's
    own path (module docstring). ``caller_of(principal)``: the endpoint's caller, None if
    refused; ``in_memory``: the endpoint's bound on a body opened whole; ``in_thread``: how
    the endpoint runs work in a worker thread.

    The application keeps the loop's read connection in ``state.loop_reads`` (None: not on
    SQLite), made and closed with it."""
    token = bearer_token(request)
    if token is None or not token.startswith(PREFIX):
        return None
    reads: KeptReadConnection | None = getattr(request.app.state, "loop_reads", None)
    # One instance (what viewers ask, many at a time): its entry waits for the loop's other
    # ready requests, to share their commit (IdleWake). A study or a series: the writer is
    # woken at once, its flush running while the instances are decrypted (longer than it).
    wake_now = not uids[2]

    def opened(transaction: ContextManager[Connection], budget: int) -> _Opened | None:
        with transaction as conn:
            try:
                caller = caller_of(authenticate(store.engine, token, conn=conn))
            except InvalidToken:
                return None
            if caller is None or not journaling.allowed(caller, Operation.READ):
                return None
            found = retrieve.located_held(conn, store, caller, uids, budget=budget, wake=wake_now)
        if found is None:
            return None
        try:  # while the journal's writer flushes the entry
            return _Opened(
                caller, found, retrieve.open_body(store, caller.tenant, found, layout), None
            )
        except ImagingError as exc:
            return _Opened(caller, found, None, exc)

    if reads is not None:
        done = opened(reads.transaction(), min(in_memory, LOOP_BODY))
    else:
        done = await in_thread(lambda: opened(read_transaction(store.engine), in_memory))
    if done is None:
        return None
    if not wake_now:
        idle_wake(request, store).ask()  # the writer, once the loop's ready requests queued theirs
    await journaled(done.found.pending)
    if done.failure is not None:
        raise done.failure
    return done.caller, retrieve.Retrieval(done.found.refs, done.found.keys, done.body)


def idle_wake(request: Request, store: ImagingStore) -> IdleWake:
    """The application's :class:`IdleWake` of the journal's writer, made on first use on the
    loop that serves it (again if another loop serves it later: a test client's)."""
    state = request.app.state
    loop = asyncio.get_running_loop()
    wake: IdleWake | None = getattr(state, "journal_idle_wake", None)
    if wake is None or wake.loop is not loop:
        wake = state.journal_idle_wake = IdleWake(loop, store.platform.durable_journal().wake)
    return wake


async def journaled(pending: Pending) -> None:
    """:func:`retrieve.durable` without a thread blocked in it: the journal's writer wakes
    the loop once the entries are committed or failed. Raises as it does."""
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[None] = loop.create_future()
    pending.add_done_callback(lambda: call_on(loop, settle, settled))
    with contextlib.suppress(TimeoutError):  # reported by durable(), below
        async with asyncio.timeout(JOURNAL_WAIT_SECONDS):
            await settled
    retrieve.durable(pending, timeout=0)
