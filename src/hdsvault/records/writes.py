"""Writes: create, update (and update-as-create), patch, delete, and their conditional forms.

Each public function is one unit of work (invariant 1)::

    authorize -> validate -> index (blind tokens, before the write lock)
      -> BEGIN -> [conditional search] -> check references -> seal + store version, head,
         tokens -> journal -> COMMIT

so a write and its journal entry commit together or not at all, and a refused write leaves
no trace but its refusal (authorization denials are journaled by the guard). :func:`apply`
is the shared core, also used by transactions and the bulk importer.

Update-as-create: ``PUT Type/id`` on an id that does not exist creates the resource with the
client's id (version 1, status 201), as FHIR allows; ids are then chosen by the client, so
they may reveal what the client puts in them (``docs/fhir.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jsonpatch
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from hdsvault.access.decision import Operation
from hdsvault.journal.entry import JournalEntry
from hdsvault.journal.store import append_many
from hdsvault.records import storage
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.finder import Finder
from hdsvault.records.guard import allow
from hdsvault.records.indexing import MemoTokens, resource_tokens
from hdsvault.records.journaling import Interaction, per_patient, seal_detail
from hdsvault.records.model import (
    Caller,
    Json,
    ResourceKey,
    Stored,
    check_id,
    check_type,
    instant,
    new_id,
    now,
    storable_types,
)
from hdsvault.records.references import first_path, patient_of, rewrite_local
from hdsvault.records.search import SearchError, parse_search
from hdsvault.records.store import RecordStore
from hdsvault.records.validation import validate


@dataclass
class Change:
    """One write inside a unit of work. ``resource`` None deletes."""

    key: ResourceKey
    resource: Json | None
    interaction: Interaction
    tokens: set[bytes] = field(default_factory=set)
    if_match: int | None = None
    new: bool = False
    """Server-assigned id: cannot exist yet, no head lookup."""


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the version now current, whether it created, whether it wrote."""

    stored: Stored
    created: bool = False
    changed: bool = True
    interaction: Interaction = Interaction.UPDATE


# ------------------------------------------------------------------ the shared core


def apply(
    conn: Connection,
    store: RecordStore,
    tenant: str,
    changes: Sequence[Change],
    when: datetime,
) -> list[WriteResult]:
    """Store ``changes`` in the current transaction (versions, heads, tokens), in order."""
    seen: set[ResourceKey] = set()
    for c in changes:
        if c.key in seen:
            raise RecordError(Problem.INVALID, f"{c.key} is written twice in one unit of work")
        seen.add(c.key)
    heads = storage.heads(conn, tenant, [c.key for c in changes if not c.new])
    keys = store.data_keys(conn, tenant)
    rows: list[storage.VersionRow] = []
    stale: list[tuple[ResourceKey, bytes]] = []
    fresh: dict[ResourceKey, bytes] = {}
    indexed: list[tuple[ResourceKey, Set[bytes]]] = []
    out: list[WriteResult] = []
    for c in changes:
        h = heads.get(c.key)
        if c.if_match is not None and (h is None or h.deleted or h.version != c.if_match):
            current = "none" if h is None or h.deleted else f'W/"{h.version}"'
            raise RecordError(
                Problem.PRECONDITION,
                f'{c.key}: If-Match W/"{c.if_match}" does not match the current '
                f"version ({current})",
            )
        if c.resource is None:
            if h is None:
                raise RecordError(Problem.NOT_FOUND, f"{c.key} does not exist")
            if h.deleted:
                out.append(
                    WriteResult(
                        Stored(c.key.type, c.key.id, h.version, h.last_updated, None),
                        changed=False,
                        interaction=c.interaction,
                    )
                )
                continue
            version = h.version + 1
            rows.append(storage.VersionRow(c.key, version, keys.current_version, None, when))
            stale.append((c.key, h.tokens))
            out.append(
                WriteResult(
                    Stored(c.key.type, c.key.id, version, when, None), interaction=c.interaction
                )
            )
            continue
        version = h.version + 1 if h is not None else 1
        resource = c.resource
        resource["id"] = c.key.id
        meta = resource.get("meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        meta["versionId"] = str(version)
        meta["lastUpdated"] = instant(when)
        resource["meta"] = meta
        body = storage.seal(keys, tenant, c.key, version, resource)
        rows.append(storage.VersionRow(c.key, version, keys.current_version, body, when))
        if h is not None and h.tokens:
            stale.append((c.key, h.tokens))
        fresh[c.key] = storage.pack(c.tokens)
        indexed.append((c.key, c.tokens))
        created = h is None or h.deleted
        out.append(
            WriteResult(
                Stored(c.key.type, c.key.id, version, when, resource),
                created=created,
                interaction=Interaction.CREATE if created else c.interaction,
            )
        )
    try:
        storage.insert_versions(conn, tenant, rows)
        storage.write_heads(conn, tenant, rows, set(heads), fresh)
        storage.drop_tokens(conn, stale)
        storage.insert_tokens(conn, indexed)
    except IntegrityError:
        raise RecordError(
            Problem.CONFLICT, "a concurrent write created the same resource; retry"
        ) from None
    return out


def check_targets(
    conn: Connection,
    tenant: str,
    items: Iterable[tuple[ResourceKey, Json]],
    present: Set[ResourceKey] = frozenset(),
) -> None:
    """Refuse (NOT_FOUND, naming the path) a local reference to a missing or deleted resource.

    ``present`` are resources written in the same unit of work.
    """
    wanted: dict[ResourceKey, Json] = {}
    for _key, resource in items:
        for target in rewrite_local(resource, {}):
            if target not in present and target.type in storable_types():
                wanted.setdefault(target, resource)
    check_target_keys(conn, tenant, wanted)


def check_target_keys(conn: Connection, tenant: str, wanted: dict[ResourceKey, Json]) -> None:
    """:func:`check_targets` on precomputed targets (target -> the resource naming it)."""
    if not wanted:
        return
    found = storage.heads(conn, tenant, wanted)
    for target, resource in wanted.items():
        h = found.get(target)
        if h is None or h.deleted:
            path = first_path(resource, target)
            state = "does not exist" if h is None else "is deleted"
            raise RecordError(
                Problem.NOT_FOUND, f"{path}: referenced resource {target} {state}", (path,)
            )


def journal_results(
    conn: Connection,
    caller: Caller,
    results: Sequence[WriteResult],
    when: datetime,
    detail: bytes | None = None,
    interaction: Interaction | None = None,
    patients: dict[ResourceKey, str | None] | None = None,
) -> None:
    """One entry per patient and interaction for the written resources.

    ``patients`` names the patient of resources whose new version has no body (deletions).
    """
    by_kind: dict[Interaction, list[tuple[str, str | None]]] = {}
    for r in results:
        if not r.changed:
            continue
        kind = interaction or r.interaction
        patient = patient_of(r.stored.resource, r.stored.key)
        if patient is None and patients:
            patient = patients.get(r.stored.key)
        by_kind.setdefault(kind, []).append((str(r.stored.key), patient))
    entries: list[JournalEntry] = []
    for kind, touched in by_kind.items():
        entries += per_patient(caller, kind, when, touched, detail=detail)
    append_many(conn, entries)


def tokens_of(store: RecordStore, tokens: MemoTokens, resource: Json) -> set[bytes]:
    return resource_tokens(resource, tokens, store.base_urls)


# ------------------------------------------------------------------ conditional criteria


def criteria_plan(
    store: RecordStore, resource_type: str, criteria: Sequence[tuple[str, str]]
) -> Any:
    """A strict search plan for conditional criteria (an unknown parameter would widen it)."""
    if not criteria:
        raise RecordError(Problem.INVALID, "conditional operation without search criteria")
    try:
        return parse_search(resource_type, criteria, strict=True, base_urls=store.base_urls)
    except SearchError as exc:
        raise RecordError(Problem.INVALID, str(exc)) from None


def _matches(
    conn: Connection, store: RecordStore, tenant: str, plan: Any, limit: int = 2
) -> list[str]:
    return Finder(conn, store, tenant).ids(plan, limit)


# ------------------------------------------------------------------ services


def create(
    store: RecordStore,
    caller: Caller,
    resource_type: str,
    resource: Json,
    *,
    if_none_exist: Sequence[tuple[str, str]] | None = None,
) -> WriteResult:
    """POST: a new resource with a server-assigned id (the body's id is ignored)."""
    check_type(resource_type)
    allow(store, caller, Operation.CREATE, resource_type)
    validate(resource, expected_type=resource_type)
    tokens = store.tokens_for(caller.tenant)
    key = ResourceKey(resource_type, new_id())
    resource["id"] = key.id
    change = Change(key, resource, Interaction.CREATE, tokens_of(store, tokens, resource), new=True)
    plan = criteria_plan(store, resource_type, if_none_exist) if if_none_exist is not None else None
    when = now()
    with store.engine.begin() as conn:
        if plan is not None:
            found = _matches(conn, store, caller.tenant, plan)
            if len(found) > 1:
                raise RecordError(
                    Problem.PRECONDITION, "If-None-Exist: several resources match the criteria"
                )
            if found:
                existing = ResourceKey(resource_type, found[0])
                rows = storage.current_rows(conn, caller.tenant, [existing])
                stored = storage.open_rows(
                    store.data_keys(conn, caller.tenant), caller.tenant, rows
                )[0]
                return WriteResult(stored, created=False, changed=False)
        check_targets(conn, caller.tenant, [(key, resource)])
        results = apply(conn, store, caller.tenant, [change], when)
        journal_results(conn, caller, results, when)
    return results[0]


def update(
    store: RecordStore,
    caller: Caller,
    resource_type: str,
    resource_id: str,
    resource: Json,
    *,
    if_match: int | None = None,
) -> WriteResult:
    """PUT ``Type/id``: a new version, or the first one (update-as-create)."""
    check_type(resource_type)
    check_id(resource_id)
    allow(store, caller, Operation.UPDATE, resource_type, resource_id=resource_id)
    validate(resource, expected_type=resource_type)
    body_id = resource.get("id")
    if body_id is None:
        raise RecordError(
            Problem.INVALID,
            f"{resource_type}.id is required in an update",
            (f"{resource_type}.id",),
        )
    if body_id != resource_id:
        raise RecordError(
            Problem.INVALID,
            f"{resource_type}.id {str(body_id)[:64]!r} does not match the URL id {resource_id!r}",
            (f"{resource_type}.id",),
        )
    key = ResourceKey(resource_type, resource_id)
    tokens = store.tokens_for(caller.tenant)
    change = Change(key, resource, Interaction.UPDATE, tokens_of(store, tokens, resource), if_match)
    when = now()
    with store.engine.begin() as conn:
        check_targets(conn, caller.tenant, [(key, resource)], {key})
        results = apply(conn, store, caller.tenant, [change], when)
        journal_results(conn, caller, results, when)
    return results[0]


def conditional_update(
    store: RecordStore,
    caller: Caller,
    resource_type: str,
    criteria: Sequence[tuple[str, str]],
    resource: Json,
    *,
    if_match: int | None = None,
) -> WriteResult:
    """PUT ``Type?criteria``: update the one match, create if none, 412 if several."""
    check_type(resource_type)
    allow(store, caller, Operation.UPDATE, resource_type)
    validate(resource, expected_type=resource_type)
    plan = criteria_plan(store, resource_type, criteria)
    tokens = store.tokens_for(caller.tenant)
    index = tokens_of(store, tokens, resource)
    when = now()
    with store.engine.begin() as conn:
        found = _matches(conn, store, caller.tenant, plan)
        if len(found) > 1:
            raise RecordError(Problem.PRECONDITION, "conditional update: several resources match")
        body_id = resource.get("id")
        if found:
            if body_id is not None and body_id != found[0]:
                raise RecordError(
                    Problem.INVALID,
                    f"{resource_type}.id does not match the resource found by the criteria",
                    (f"{resource_type}.id",),
                )
            key = ResourceKey(resource_type, found[0])
            change = Change(key, resource, Interaction.UPDATE, index, if_match)
        elif isinstance(body_id, str):
            key = ResourceKey(resource_type, check_id(body_id))
            change = Change(key, resource, Interaction.UPDATE, index, if_match)
        else:
            key = ResourceKey(resource_type, new_id())
            change = Change(key, resource, Interaction.CREATE, index, if_match, new=True)
        check_targets(conn, caller.tenant, [(key, resource)], {key})
        results = apply(conn, store, caller.tenant, [change], when)
        detail = seal_detail(
            store.data_keys(conn, caller.tenant), caller, {"criteria": list(criteria)}
        )
        journal_results(conn, caller, results, when, detail)
    return results[0]


def patch(
    store: RecordStore,
    caller: Caller,
    resource_type: str,
    resource_id: str,
    operations: Any,
    *,
    if_match: int | None = None,
) -> WriteResult:
    """PATCH with a JSON Patch (RFC 6902): applied to the current version, then validated."""
    check_type(resource_type)
    check_id(resource_id)
    key = ResourceKey(resource_type, resource_id)
    allow(store, caller, Operation.UPDATE, resource_type, resource_id=key.id)
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise RecordError(Problem.INVALID, "a JSON Patch body is an array of operation objects")
    tokens = store.tokens_for(caller.tenant)
    when = now()
    with store.engine.begin() as conn:
        head = storage.head(conn, caller.tenant, key, lock=True)
        if head is None:
            raise RecordError(Problem.NOT_FOUND, f"{key} does not exist")
        if head.deleted:
            raise RecordError(Problem.GONE, f"{key} is deleted")
        if if_match is not None and if_match != head.version:
            raise RecordError(
                Problem.PRECONDITION,
                f'{key}: If-Match W/"{if_match}" does not match the current '
                f'version W/"{head.version}"',
            )
        keys = store.data_keys(conn, caller.tenant)
        current = storage.open_rows(
            keys, caller.tenant, storage.version_rows(conn, caller.tenant, key, head.version)
        )[0]
        assert current.resource is not None
        try:
            patched = jsonpatch.apply_patch(current.resource, operations)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise RecordError(
                Problem.UNPROCESSABLE, f"JSON Patch cannot be applied: {exc}"
            ) from None
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise RecordError(Problem.INVALID, f"malformed JSON Patch: {exc}") from None
        if not isinstance(patched, dict):
            raise RecordError(Problem.UNPROCESSABLE, "the patched document is not a resource")
        if patched.get("id") != resource_id or patched.get("resourceType") != resource_type:
            raise RecordError(Problem.UNPROCESSABLE, "a patch may not change id or resourceType")
        validate(patched, expected_type=resource_type)
        change = Change(key, patched, Interaction.PATCH, tokens_of(store, tokens, patched))
        check_targets(conn, caller.tenant, [(key, patched)], {key})
        results = apply(conn, store, caller.tenant, [change], when)
        journal_results(conn, caller, results, when)
    return results[0]


def delete(
    store: RecordStore,
    caller: Caller,
    resource_type: str,
    resource_id: str,
    *,
    if_match: int | None = None,
) -> WriteResult:
    """DELETE: a tombstone version; the resource then reads as 410 Gone."""
    check_type(resource_type)
    check_id(resource_id)
    key = ResourceKey(resource_type, resource_id)
    allow(store, caller, Operation.DELETE, resource_type, resource_id=key.id)
    when = now()
    with store.engine.begin() as conn:
        patients = {key: _patient_before(conn, store, caller.tenant, key)}
        results = apply(
            conn,
            store,
            caller.tenant,
            [Change(key, None, Interaction.DELETE, if_match=if_match)],
            when,
        )
        journal_results(conn, caller, results, when, patients=patients)
    return results[0]


def conditional_delete(
    store: RecordStore,
    caller: Caller,
    resource_type: str,
    criteria: Sequence[tuple[str, str]],
) -> list[WriteResult]:
    """DELETE ``Type?criteria``: the one match (or nothing); several matches -> 412."""
    check_type(resource_type)
    allow(store, caller, Operation.DELETE, resource_type)
    plan = criteria_plan(store, resource_type, criteria)
    when = now()
    with store.engine.begin() as conn:
        found = _matches(conn, store, caller.tenant, plan)
        if len(found) > 1:
            raise RecordError(Problem.PRECONDITION, "conditional delete: several resources match")
        if not found:
            return []
        key = ResourceKey(resource_type, found[0])
        patients = {key: _patient_before(conn, store, caller.tenant, key)}
        results = apply(conn, store, caller.tenant, [Change(key, None, Interaction.DELETE)], when)
        detail = seal_detail(
            store.data_keys(conn, caller.tenant), caller, {"criteria": list(criteria)}
        )
        journal_results(conn, caller, results, when, detail, patients=patients)
    return results


def _patient_before(
    conn: Connection, store: RecordStore, tenant: str, key: ResourceKey
) -> str | None:
    """The patient a resource concerns, from its current version (for a deletion's entry)."""
    rows = storage.current_rows(conn, tenant, [key])
    if not rows:
        return None
    stored = storage.open_rows(store.data_keys(conn, tenant), tenant, rows)[0]
    return patient_of(stored.resource, key)
