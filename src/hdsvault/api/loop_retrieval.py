"""WADO-RS retrievals served on the event loop itself, when that waits for nothing.

Why: a retrieval handed to a worker thread and back costs the loop a submission, a wake-up
by the thread's result, and the interpreter lock passed back and forth, per request; with
retrievals of one instance (what viewers ask most) that was ~12 % of the server's CPU per
request, and with 40 x 39 KB studies at concurrency 4 ~10 % (docs/imaging.md). Served here,
the loop does the lookup and the decryption, and waits for the journal's flush without any
thread blocked in it: the journal's writer wakes the loop (:meth:`Pending.add_done_callback`).

When: only when nothing on the way can wait on a file, a lock or the network, so that the
loop's other requests are held for the CPU work alone (at most ~1-2 ms, :data:`LOOP_BODY`):

- the database is SQLite (a read is a call into a local file; a PostgreSQL read is a network
  round trip), read on one connection kept for the loop (:class:`KeptReadConnection`: no
  pool to wait for);
- the credential is a local API token that authenticates (an OpenID Connect JWT may need its
  issuer's keys fetched; a client certificate is mapped elsewhere), and the policy allows;
- the retrieval totals at most :data:`LOOP_BODY` bytes, every blob read with the lookup
  (inline) or held in the process caches (:func:`retrieve.located_held`).

Anything else (every refusal, which must be journaled durably before it is answered, and
every other case above) returns None before anything is journaled, and the endpoint takes
the worker-thread path, which decides, journals and answers exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.requests import Request

from hdsvault.access.decision import Operation
from hdsvault.access.tokens import PREFIX, InvalidToken, Principal, authenticate
from hdsvault.db.engine import KeptReadConnection
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

Uids = tuple[list[str], list[str], list[str]]


def bearer_token(request: Request) -> str | None:
    """The request's bearer credential, as :func:`hdsvault.api.auth.require_principal` reads it."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def retrieval_on_loop(
    request: Request,
    store: ImagingStore,
    caller_of: Callable[[Principal], Caller | None],
    uids: Uids,
    layout: retrieve.Layout,
    in_memory: int,
) -> tuple[Caller, retrieve.Retrieval] | None:
    """The retrieval of ``uids``, opened and journaled durably, or None: take the thread
    (module docstring). ``caller_of(principal)``: the endpoint's caller, None if refused;
    ``in_memory``: the endpoint's bound on a body opened whole (:data:`LOOP_BODY` at most).

    The application keeps the loop's read connection in ``state.loop_reads`` (None: not on
    SQLite), made and closed with it."""
    reads: KeptReadConnection | None = getattr(request.app.state, "loop_reads", None)
    token = bearer_token(request)
    if reads is None or token is None or not token.startswith(PREFIX):
        return None
    with reads.transaction() as conn:
        try:
            caller = caller_of(authenticate(store.engine, token, conn=conn))
        except InvalidToken:
            return None
        if caller is None or not journaling.allowed(caller, Operation.READ):
            return None
        found = retrieve.located_held(conn, store, caller, *uids, budget=min(in_memory, LOOP_BODY))
    if found is None:
        return None
    failure: ImagingError | None = None
    body = None
    try:  # while the journal's writer flushes the entry
        body = retrieve.open_body(store, caller.tenant, found, layout)
    except ImagingError as exc:
        failure = exc
    await journaled(found.pending)
    if failure is not None:
        raise failure
    return caller, retrieve.Retrieval(found.refs, found.keys, body)


async def journaled(pending: Pending) -> None:
    """:func:`retrieve.durable` without a thread blocked in it: the journal's writer wakes
    the loop once the entries are committed or failed. Raises as it does."""
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not settled.done():
            settled.set_result(None)

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(settle)

    pending.add_done_callback(wake)
    with contextlib.suppress(TimeoutError):  # reported by durable(), below
        async with asyncio.timeout(JOURNAL_WAIT_SECONDS):
            await settled
    retrieve.durable(pending, timeout=0)
