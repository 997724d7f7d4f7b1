"""The search service: parse, authorize, run over the blind index, journal, return a page.

The search parameters are clinical content (``name=dupont``, ``code=...hiv...``): they are
journaled only sealed under the tenant's data key (``detail_sealed``); the clear part of the
entries names the resources returned, grouped by patient (``records.journaling``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hdsvault.access.decision import Operation
from hdsvault.db.engine import read_connection
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.finder import Finder, Page
from hdsvault.records.guard import allow
from hdsvault.records.journaling import Interaction, commit_reads, per_patient, seal_detail
from hdsvault.records.model import Caller, check_type, now
from hdsvault.records.reads import touched_by
from hdsvault.records.search import SearchError, SearchPlan, parse_search
from hdsvault.records.store import RecordStore


@dataclass
class SearchResult:
    """A searchset page: the plan (for links and rendering), the page, paging numbers."""

    plan: SearchPlan
    page: Page
    count: int
    offset: int

    @property
    def count_only(self) -> bool:
        return self.plan.result.summary == "count"


def plan_of(
    store: RecordStore, resource_type: str, pairs: Sequence[tuple[str, str]], strict: bool
) -> SearchPlan:
    try:
        return parse_search(resource_type, pairs, strict=strict, base_urls=store.base_urls)
    except SearchError as exc:
        raise RecordError(Problem.INVALID, str(exc), (exc.param,), code="invalid") from None


def search(
    store: RecordStore,
    caller: Caller,
    resource_type: str,
    pairs: Sequence[tuple[str, str]],
    *,
    strict: bool = False,
    offset: int = 0,
) -> SearchResult:
    """Run ``pairs`` (query string or form, in order) on ``resource_type``."""
    check_type(resource_type)
    allow(store, caller, Operation.SEARCH, resource_type)
    plan = plan_of(store, resource_type, pairs, strict)
    if any(inc.param is None for inc in plan.result.revinclude):
        raise RecordError(
            Problem.NOT_SUPPORTED, "_revinclude=* is not supported: name Source:param"
        )
    options = store.options
    count = plan.result.count if plan.result.count is not None else options.default_count
    count = min(count, options.max_count)
    if offset < 0 or offset > 10_000_000:
        raise RecordError(Problem.INVALID, "_offset must be between 0 and 10000000")
    with read_connection(store.engine) as conn:
        finder = Finder(conn, store, caller.tenant)
        page = finder.page(
            plan, count=count, offset=offset, count_only=plan.result.summary == "count"
        )
        page.included = finder.includes(plan, page.matches)
        keys = finder.keys
    for t in sorted({s.type for s in page.included} - {resource_type}):
        allow(store, caller, Operation.SEARCH, t)
    detail = seal_detail(keys, caller, {"type": resource_type, "query": list(pairs)})
    touched = touched_by(page.matches + page.included)
    commit_reads(
        store.platform, per_patient(caller, Interaction.SEARCH, now(), touched, detail=detail)
    )
    return SearchResult(plan, page, count, offset)
