"""Bundles on the wire: searchset, history, batch/transaction responses.

Why separate from the store: ``fullUrl``, links and ``response.location`` are absolute URLs of
this server, which only the face knows; the store returns versions and pages.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from urllib.parse import urlencode

from hdsvault.api.fhir.wire import etag, http_date
from hdsvault.records.bundles import BundleResult
from hdsvault.records.errors import Issue, operation_outcome
from hdsvault.records.model import Json, Stored, instant, now
from hdsvault.records.reads import HistoryPage
from hdsvault.records.searching import SearchResult
from hdsvault.records.summary import elements, summarize

_OFFSET = "_offset"


def _bundle(kind: str) -> Json:
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(now())},
        "type": kind,
    }


def _link(url: str, pairs: Sequence[tuple[str, str]], offset: int | None) -> str:
    q = [(k, v) for k, v in pairs if k != _OFFSET]
    if offset:
        q.append((_OFFSET, str(offset)))
    return f"{url}?{urlencode(q)}" if q else url


def shape(resource: Json, summary: str | None, names: Sequence[str]) -> Json:
    return elements(summarize(resource, summary), names)


def searchset(
    result: SearchResult, base: str, resource_type: str, pairs: Sequence[tuple[str, str]]
) -> Json:
    """A searchset Bundle with total, self/first/next/previous links and the page."""
    plan, page = result.plan, result.page
    used = [(k, v) for k, v in pairs if k.split(":", 1)[0].split(".", 1)[0] not in plan.unknown]
    url = f"{base}/{resource_type}"
    b = _bundle("searchset")
    b["total"] = page.total
    links = [{"relation": "self", "url": _link(url, used, result.offset)}]
    if not result.count_only:
        links.append({"relation": "first", "url": _link(url, used, 0)})
        if result.offset + result.count < page.total and result.count > 0:
            links.append(
                {"relation": "next", "url": _link(url, used, result.offset + result.count)}
            )
        if result.offset > 0:
            prev = max(0, result.offset - result.count)
            links.append({"relation": "previous", "url": _link(url, used, prev)})
    b["link"] = links
    entries: list[Json] = []
    summary, names = plan.result.summary, plan.result.elements
    for s in page.matches:
        if s.resource is not None:
            entries.append(
                {
                    "fullUrl": f"{base}/{s.type}/{s.id}",
                    "resource": shape(s.resource, summary, names),
                    "search": {"mode": "match"},
                }
            )
    for s in page.included:
        if s.resource is not None:
            entries.append(
                {
                    "fullUrl": f"{base}/{s.type}/{s.id}",
                    "resource": shape(s.resource, summary, ()),
                    "search": {"mode": "include"},
                }
            )
    notes = [
        Issue(
            f"parameter {name!r} is not known for {resource_type}: ignored",
            "not-supported",
            "warning",
        )
        for name in plan.unknown
    ] + [
        Issue(f"parameter {name!r} ignored: {why}", "informational", "information")
        for name, why in plan.ignored
    ]
    if notes:
        entries.append({"resource": operation_outcome(notes), "search": {"mode": "outcome"}})
    if entries:
        b["entry"] = entries
    return b


def history(page: HistoryPage, base: str, path: str, count: int, offset: int) -> Json:
    """A history Bundle, newest first; deletions are entries without a resource."""
    b = _bundle("history")
    b["total"] = page.total
    url = f"{base}/{path}".rstrip("/") + "/_history"
    pairs = [("_count", str(count))]
    links = [{"relation": "self", "url": _link(url, pairs, offset)}]
    if offset + count < page.total:
        links.append({"relation": "next", "url": _link(url, pairs, offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": _link(url, pairs, max(0, offset - count))})
    b["link"] = links
    entries = []
    for s in page.versions:
        e: Json = {"fullUrl": f"{base}/{s.type}/{s.id}"}
        if s.resource is not None:
            e["resource"] = s.resource
        method = "DELETE" if s.deleted else ("POST" if s.version == 1 else "PUT")
        e["request"] = {
            "method": method,
            "url": f"{s.type}/{s.id}" if method != "POST" else s.type,
        }
        e["response"] = {
            "status": "204 No Content"
            if s.deleted
            else ("201 Created" if s.version == 1 else "200 OK"),
            "etag": etag(s.version),
            "lastModified": instant(s.last_updated),
        }
        entries.append(e)
    if entries:
        b["entry"] = entries
    return b


def bundle_response(result: BundleResult, base: str, representation: bool) -> Json:
    b = _bundle(result.type)
    entries = []
    for r in result.entries:
        resp: Json = {"status": r.status}
        e: Json = {}
        s: Stored | None = r.stored
        if s is not None:
            if r.location:
                resp["location"] = f"{s.type}/{s.id}/_history/{s.version}"
            resp["etag"] = etag(s.version)
            resp["lastModified"] = instant(s.last_updated)
            e["fullUrl"] = f"{base}/{s.type}/{s.id}"
            if s.resource is not None and (representation or r.status.startswith("200")):
                e["resource"] = s.resource
        if r.body is not None:
            e["resource"] = r.body
        if r.outcome is not None:
            resp["outcome"] = r.outcome
        e["response"] = resp
        entries.append(e)
    b["entry"] = entries
    return b


__all__ = ["bundle_response", "history", "http_date", "searchset", "shape"]
