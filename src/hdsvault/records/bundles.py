"""Batch and transaction Bundles.

Transaction (all or nothing): every entry is parsed, authorized and validated first; then,
in ONE database transaction, conditional entries are resolved (``ifNoneExist``, conditional
update/delete), ids are assigned (random UUIDs for POST), every ``urn:uuid:`` fullUrl is
mapped to its ``Type/id`` and every reference to it rewritten, local references are checked
(an unresolvable one refuses the whole bundle, naming ``Bundle.entry[i]...``), the writes are
stored and journaled, and the transaction commits. Read entries (GET) run after the commit
and are journaled as reads. Any error rolls everything back: nothing is partly written.

Batch: each entry is its own unit of work through the single-resource services; a failed
entry gets its OperationOutcome in the response and the others proceed.

Not supported in bundles (refused with a clear error): PATCH entries (their body is a
Binary/Parameters), HEAD, and ``urn:uuid`` references inside a batch (its entries must
not depend on each other).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from sqlalchemy import Connection

from hdsvault.access.decision import Operation
from hdsvault.records import reads, searching, storage, writes
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.finder import Finder
from hdsvault.records.guard import allow
from hdsvault.records.indexing import resource_tokens
from hdsvault.records.journaling import Interaction
from hdsvault.records.model import (
    Caller,
    Json,
    ResourceKey,
    Stored,
    check_id,
    check_type,
    new_id,
    now,
    storable_types,
)
from hdsvault.records.references import rewrite_local
from hdsvault.records.search import TokenFunction
from hdsvault.records.store import RecordStore
from hdsvault.records.validation import validate

_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"}
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3, "INVALID": 4}


@dataclass
class Entry:
    """One parsed bundle entry."""

    index: int
    method: str
    type: str
    id: str | None
    version: str | None
    criteria: list[tuple[str, str]] | None
    resource: Json | None
    full_url: str | None
    if_none_exist: list[tuple[str, str]] | None = None
    if_match: int | None = None
    key: ResourceKey | None = None
    skip: bool = False
    """Conditional create that found its resource: nothing to write."""
    targets: set[ResourceKey] = field(default_factory=set)
    """Local references of the resource, after rewriting."""
    error: RecordError | None = None
    """A batch entry that could not be parsed (answered with its OperationOutcome)."""

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


@dataclass
class EntryResult:
    """What the response entry says."""

    status: str
    stored: Stored | None = None
    outcome: Json | None = None
    body: Json | None = None
    location: bool = True


@dataclass
class BundleResult:
    type: str
    entries: list[EntryResult] = field(default_factory=list)


def _fail(entry_index: int, exc: RecordError) -> RecordError:
    where = f"Bundle.entry[{entry_index}]"
    if exc.message.startswith(where):
        return exc
    return RecordError(
        exc.problem, f"{where}: {exc.message}", exc.expression or (where,), exc.extra, exc.code
    )


def parse_etag(value: Any) -> int | None:
    """``W/"3"`` / ``"3"`` / ``3`` -> 3; None when absent; INVALID when malformed."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit() or len(text) > 9:
        raise RecordError(Problem.INVALID, f"If-Match {str(value)[:40]!r} is not a version ETag")
    return int(text)


def _parse_url(url: str) -> tuple[str, str | None, str | None, list[tuple[str, str]] | None]:
    """``Type[/id[/_history/vid]][?query]`` (relative) -> parts; INVALID otherwise."""
    path, sep, query = url.partition("?")
    if "://" in path:
        marker = path.find("/fhir/")
        rest = (
            path[marker + 6 :].split("/", 1)[1] if marker >= 0 and "/" in path[marker + 6 :] else ""
        )
        path = rest
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if not parts:
        raise RecordError(Problem.INVALID, f"request.url {url[:80]!r} names no resource type")
    rtype = check_type(parts[0])
    rid = version = None
    if len(parts) >= 2:
        rid = check_id(parts[1])
    if len(parts) == 4 and parts[2] == "_history":
        version = parts[3]
    elif len(parts) not in (1, 2):
        raise RecordError(Problem.INVALID, f"request.url {url[:80]!r} is not Type[/id][?query]")
    criteria = parse_qsl(query, keep_blank_values=True) if sep else None
    return rtype, rid, version, criteria


def parse_entries(
    bundle: Json, max_entries: int, *, structure: bool = True
) -> tuple[str, list[Entry]]:
    """Check the Bundle's shape and parse its entries (nothing is touched yet)."""
    if bundle.get("resourceType") != "Bundle":
        raise RecordError(Problem.INVALID, "expected a Bundle", ("resourceType",))
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise RecordError(
            Problem.INVALID, "Bundle.type must be 'transaction' or 'batch'", ("Bundle.type",)
        )
    raw = bundle.get("entry", [])
    if not isinstance(raw, list):
        raise RecordError(Problem.INVALID, "Bundle.entry must be an array", ("Bundle.entry",))
    if len(raw) > max_entries:
        raise RecordError(
            Problem.TOO_LARGE,
            f"Bundle has {len(raw)} entries; this server accepts at most {max_entries} "
            "(setting fhir.max_bundle_entries)",
            ("Bundle.entry",),
        )
    entries: list[Entry] = []
    for i, e in enumerate(raw):
        try:
            entries.append(_parse_entry(i, e, structure))
        except RecordError as exc:
            if kind == "transaction":
                raise _fail(i, exc) from None
            entries.append(Entry(i, "INVALID", "", None, None, None, None, None, error=exc))
    return kind, entries


def _parse_entry(i: int, e: Any, structure: bool = True) -> Entry:
    if not isinstance(e, dict):
        raise RecordError(Problem.INVALID, "entry must be an object")
    req = e.get("request")
    if not isinstance(req, dict):
        raise RecordError(Problem.INVALID, "request is required", (f"Bundle.entry[{i}].request",))
    method, url = req.get("method"), req.get("url")
    if method not in _METHODS or not isinstance(url, str) or not url:
        raise RecordError(
            Problem.INVALID,
            "request needs a method (GET POST PUT DELETE) and a url",
            (f"Bundle.entry[{i}].request",),
        )
    rtype, rid, version, criteria = _parse_url(url)
    resource = e.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise RecordError(
            Problem.INVALID, "resource must be an object", (f"Bundle.entry[{i}].resource",)
        )
    full_url = e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else None
    entry = Entry(i, method, rtype, rid, version, criteria, resource, full_url)
    if method in ("PATCH", "HEAD"):
        raise RecordError(Problem.NOT_SUPPORTED, f"{method} entries are not supported in bundles")
    if method in ("POST", "PUT"):
        if resource is None:
            raise RecordError(Problem.INVALID, f"{method} needs a resource")
        validate(resource, expected_type=rtype, structure=structure)
    if method == "POST" and (rid is not None or criteria is not None):
        raise RecordError(Problem.INVALID, "POST url must be a resource type")
    if method == "PUT":
        if rid is None and criteria is None:
            raise RecordError(Problem.INVALID, "PUT url must be Type/id or Type?criteria")
        assert resource is not None
        if rid is not None and resource.get("id") not in (None, rid):
            raise RecordError(Problem.INVALID, "resource id does not match the url id")
    if method == "DELETE" and rid is None and criteria is None:
        raise RecordError(Problem.INVALID, "DELETE url must be Type/id or Type?criteria")
    ine = req.get("ifNoneExist")
    if isinstance(ine, str) and ine:
        entry.if_none_exist = parse_qsl(
            ine.lstrip("?").partition("?")[2] or ine.lstrip("?"), keep_blank_values=True
        )
    entry.if_match = parse_etag(req.get("ifMatch"))
    return entry


OPERATIONS = {
    "GET": Operation.READ,
    "POST": Operation.CREATE,
    "PUT": Operation.UPDATE,
    "DELETE": Operation.DELETE,
}


def process(store: RecordStore, caller: Caller, bundle: Json) -> BundleResult:
    """Run a batch or a transaction Bundle; returns the response entries in entry order."""
    kind, entries = parse_entries(bundle, store.options.max_bundle_entries)
    if kind == "batch":
        return BundleResult("batch-response", [_batch_entry(store, caller, e) for e in entries])
    for op, rt in sorted({(OPERATIONS[e.method], e.type) for e in entries}):
        allow(store, caller, op, rt)
    return BundleResult("transaction-response", transaction(store, caller, entries))


# ------------------------------------------------------------------ transaction


def transaction(
    store: RecordStore,
    caller: Caller,
    entries: list[Entry],
    *,
    check_references: bool = True,
    interaction: Interaction | None = None,
    prepared: Prepared | None = None,
    within: Connection | None = None,
) -> list[EntryResult]:
    """The all-or-nothing core (also used by the importer).

    Without conditional entries, ids, reference rewriting and blind-index tokens are all
    computed before the transaction opens (:func:`prepare`, possibly in another process:
    ``prepared``), so the write lock is held only to store.

    ``within``: run inside that connection's open transaction, as a savepoint (the importer
    groups bundles that way; see ``records.bulk``); the bundle stays all or nothing, and
    is durable when the caller commits. GET entries need a committed bundle: refused then.
    """
    if within is not None and any(e.method == "GET" for e in entries):
        raise RecordError(Problem.INVALID, "GET entries need their own transaction")
    results: dict[int, EntryResult] = {}
    tokens = store.tokens_for(caller.tenant)
    when = now()
    ordered = sorted(entries, key=lambda e: (_ORDER[e.method], e.index))
    conditional = is_conditional(ordered)
    changes: list[writes.Change] = []
    by_key: dict[ResourceKey, Entry] = {}
    if prepared is not None:
        changes, by_key = prepared
    elif not conditional:
        changes, by_key = prepare(store.base_urls, tokens, entries)
    with _unit_of_work(store, within) as conn:
        if conditional:
            finder = Finder(conn, store, caller.tenant)

            def matches(e: Entry, pairs: list[tuple[str, str]]) -> list[str]:
                try:
                    return finder.ids(writes.criteria_plan(store, e.type, pairs), 2)
                except RecordError as exc:
                    raise _fail(e.index, exc) from None

            changes, by_key = _changes(store.base_urls, tokens, ordered, _assign(ordered, matches))
        if check_references:
            wanted: dict[ResourceKey, Json] = {}
            owner: dict[int, int] = {}
            for c in changes:
                e = by_key[c.key]
                for target in e.targets:
                    if (
                        target not in by_key
                        and target.type in storable_types()
                        and target not in wanted
                        and c.resource is not None
                    ):
                        wanted[target] = c.resource
                        owner[id(c.resource)] = e.index
            try:
                writes.check_target_keys(conn, caller.tenant, wanted)
            except RecordError as exc:
                failing = next(
                    (owner[id(r)] for t, r in wanted.items() if str(t) in exc.message), None
                )
                raise (exc if failing is None else _fail(failing, exc)) from None
        try:
            applied = writes.apply(conn, store, caller.tenant, changes, when)
        except RecordError as exc:
            raise RecordError(
                exc.problem, f"transaction: {exc.message}", exc.expression, exc.extra, exc.code
            ) from None
        for c, r in zip(changes, applied, strict=True):
            e = by_key[c.key]
            if r.created:
                status = "201 Created"
            else:
                status = "204 No Content" if c.resource is None else "200 OK"
            results[e.index] = EntryResult(status, r.stored)
        writes.journal_results(conn, caller, applied, when, interaction=interaction)
        skipped = [e for e in ordered if e.skip and e.method == "POST" and e.key is not None]
        if skipped:
            rows = storage.current_rows(conn, caller.tenant, [e.key for e in skipped if e.key])
            keys = store.data_keys(conn, caller.tenant)
            found = {s.key: s for s in storage.open_rows(keys, caller.tenant, rows)}
            for e in skipped:
                assert e.key is not None
                results[e.index] = EntryResult("200 OK", found.get(e.key))
        for e in ordered:
            if e.skip and e.method == "DELETE":
                results[e.index] = EntryResult("204 No Content", location=False)
    for e in ordered:
        if e.method == "GET":
            results[e.index] = _get(store, caller, e)
    return [results[e.index] for e in entries]


@contextmanager
def _unit_of_work(store: RecordStore, within: Connection | None) -> Iterator[Connection]:
    """A transaction of its own, or a savepoint inside ``within``'s open transaction."""
    if within is None:
        with store.engine.begin() as conn:
            yield conn
    else:
        with within.begin_nested():
            yield within


Matcher = Callable[[Entry, list[tuple[str, str]]], list[str]]
Prepared = tuple[list["writes.Change"], dict[ResourceKey, Entry]]


def is_conditional(entries: Sequence[Entry]) -> bool:
    """Whether resolving the entries needs the database (conditional create/update/delete)."""
    return any(
        e.method != "GET" and (e.if_none_exist is not None or (e.id is None and e.method != "POST"))
        for e in entries
    )


def prepare(base_urls: tuple[str, ...], tokens: TokenFunction, entries: list[Entry]) -> Prepared:
    """Ids, reference rewriting and tokens of a transaction without conditional entries.

    Pure CPU work on the entries (no database): the importer runs it in worker processes.
    """
    ordered = sorted(entries, key=lambda e: (_ORDER[e.method], e.index))
    return _changes(base_urls, tokens, ordered, _assign(ordered, None))


def _assign(ordered: list[Entry], matches: Matcher | None) -> dict[str, str]:
    """Decide each entry's key (resolving conditions with ``matches``); fullUrl -> Type/id."""
    assigned: dict[str, str] = {}
    for e in ordered:
        if e.method == "GET":
            continue
        if e.method == "POST":
            if e.if_none_exist is not None and matches is not None:
                found = matches(e, e.if_none_exist)
                if len(found) > 1:
                    raise _fail(
                        e.index, RecordError(Problem.PRECONDITION, "ifNoneExist: several matches")
                    )
                if found:
                    e.key, e.skip = ResourceKey(e.type, found[0]), True
            e.key = e.key or ResourceKey(e.type, new_id())
        elif e.id is not None:
            e.key = ResourceKey(e.type, e.id)
        elif matches is not None:
            assert e.criteria is not None
            found = matches(e, e.criteria)
            if len(found) > 1:
                raise _fail(e.index, RecordError(Problem.PRECONDITION, "several resources match"))
            if found:
                e.key = ResourceKey(e.type, found[0])
            elif e.method == "PUT":
                assert e.resource is not None
                body_id = e.resource.get("id")
                e.key = ResourceKey(e.type, body_id if isinstance(body_id, str) else new_id())
            else:
                e.skip = True  # conditional delete without a match
        if e.full_url and e.key is not None:
            assigned[e.full_url] = str(e.key)
    return assigned


def _changes(
    base_urls: tuple[str, ...],
    tokens: TokenFunction,
    ordered: list[Entry],
    assigned: dict[str, str],
) -> Prepared:
    """Rewrite bundle-local references and build the changes (with their tokens)."""
    changes: list[writes.Change] = []
    by_key: dict[ResourceKey, Entry] = {}
    for e in ordered:
        if e.method == "GET" or e.skip or e.key is None:
            continue
        if e.resource is not None:
            try:
                e.targets = set(rewrite_local(e.resource, assigned))
            except RecordError as exc:
                raise _fail(e.index, exc) from None
        kind = {"POST": Interaction.CREATE, "PUT": Interaction.UPDATE}.get(
            e.method, Interaction.DELETE
        )
        toks = resource_tokens(e.resource, tokens, base_urls) if e.resource is not None else set()
        changes.append(
            writes.Change(e.key, e.resource, kind, toks, e.if_match, new=e.method == "POST")
        )
        by_key[e.key] = e
    return changes, by_key


def _get(store: RecordStore, caller: Caller, e: Entry) -> EntryResult:
    if e.id is not None and e.version is not None:
        return EntryResult("200 OK", reads.vread(store, caller, e.type, e.id, e.version))
    if e.id is not None:
        return EntryResult("200 OK", reads.read(store, caller, e.type, e.id))
    result = searching.search(store, caller, e.type, e.criteria or [])
    return EntryResult("200 OK", body=_searchset_stub(result), location=False)


def _searchset_stub(result: searching.SearchResult) -> Json:
    """A minimal searchset for a GET entry (the face renders full ones)."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": result.page.total,
        "entry": [
            {"fullUrl": f"{s.type}/{s.id}", "resource": s.resource, "search": {"mode": "match"}}
            for s in result.page.matches
        ],
    }


# ------------------------------------------------------------------ batch


def _batch_entry(store: RecordStore, caller: Caller, e: Entry) -> EntryResult:
    try:
        if e.error is not None:
            raise e.error
        if e.resource is not None:
            rewrite_local(e.resource, {})
        if e.method == "GET":
            return _get(store, caller, e)
        if e.method == "POST":
            assert e.resource is not None
            r = writes.create(store, caller, e.type, e.resource, if_none_exist=e.if_none_exist)
            return EntryResult("201 Created" if r.changed else "200 OK", r.stored)
        if e.method == "PUT":
            assert e.resource is not None
            if e.id is not None:
                r = writes.update(store, caller, e.type, e.id, e.resource, if_match=e.if_match)
            else:
                r = writes.conditional_update(
                    store, caller, e.type, e.criteria or [], e.resource, if_match=e.if_match
                )
            return EntryResult("201 Created" if r.created else "200 OK", r.stored)
        if e.id is not None:
            writes.delete(store, caller, e.type, e.id, if_match=e.if_match)
        else:
            writes.conditional_delete(store, caller, e.type, e.criteria or [])
        return EntryResult("204 No Content", location=False)
    except RecordError as exc:
        failed = _fail(e.index, exc)
        return EntryResult(_STATUS_TEXT[exc.problem], outcome=failed.outcome(), location=False)


_STATUS_TEXT = {
    Problem.INVALID: "400 Bad Request",
    Problem.UNPROCESSABLE: "422 Unprocessable Entity",
    Problem.NOT_FOUND: "404 Not Found",
    Problem.GONE: "410 Gone",
    Problem.CONFLICT: "409 Conflict",
    Problem.PRECONDITION: "412 Precondition Failed",
    Problem.FORBIDDEN: "403 Forbidden",
    Problem.TOO_LARGE: "413 Payload Too Large",
    Problem.TOO_COSTLY: "400 Bad Request",
    Problem.NOT_SUPPORTED: "400 Bad Request",
}
