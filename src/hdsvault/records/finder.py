"""Run a parsed search over the blind index: candidates in SQL, exact answer after decryption.

How a :class:`~hdsvault.records.search.SearchPlan` becomes SQL (``resources`` = r):

- each token group ``g`` of an alternative: ``r.resource_id IN (SELECT resource_id FROM
  search_tokens WHERE token IN g)`` (the lookup index drives it; a token is keyed per tenant
  and its field names the type, so its rows are of this tenant and type only);
- an alternative = AND of its groups; a parameter = OR of its alternatives (NOT for a
  negated one); the request = AND of its parameters, plus ``_id`` (clear ids) and
  ``_lastUpdated`` (clear column, every prefix compared in SQL).

Exactness: the tokens of most parameters decide the match by themselves (codes,
identifiers, references, URIs, ``:exact`` and one-word string prefixes, ``:missing``,
``:not``) — the answer, its ``total`` and its pages come straight from SQL and only the page
is decrypted. Other parameters (dates, numbers, quantities, several words, ``:contains``,
``:text``, composites) select a superset: every candidate is decrypted and checked with
the plan's exact test, so ``total`` stays accurate. :func:`exact_on_tokens` decides.

Order: ``_lastUpdated`` then id (stable, and new resources land at the end, so offset paging
does not shift under concurrent creates); ``_sort`` on ``_lastUpdated``/``_id`` runs in SQL,
on any other parameter in memory over at most ``fhir.max_sort_candidates`` matches.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Select,
    and_,
    false,
    func,
    intersect,
    not_,
    or_,
    select,
    true,
    union,
)

from hdsvault.db.schema import resource_versions, resources, search_tokens
from hdsvault.records import storage
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.indexing import MemoTokens
from hdsvault.records.model import ResourceKey, Stored
from hdsvault.records.search import ParamPlan, SearchError, SearchPlan, parse_search
from hdsvault.records.search.chaining import Include
from hdsvault.records.search.definitions import SearchParam, search_parameters
from hdsvault.records.search.extract import values_of
from hdsvault.records.search.prefixes import DateQuery
from hdsvault.records.search.query import LastUpdatedFilter
from hdsvault.records.search.text import PREFIX_CAP, normalise, words
from hdsvault.records.search.values import (
    DateValue,
    IndexValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from hdsvault.records.store import RecordStore

SQL_SORTS = {"_lastUpdated", "_id"}
MAX_INCLUDES = 1000
"""Resources added by ``_include``/``_revinclude`` to one page (documented limit)."""
_INCLUDE_ROUNDS = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH = 500
_WALK_FACTOR = 25
"""Page through the listing index (probing the matches) rather than sorting every match once
a search has at least this many matches per row of the page (see :meth:`Finder.page_ids`)."""
_PROBE_LIMIT = 1000
"""An AND of token sets walks the smallest set when it has at most this many rows."""
_WIDE_GROUP = 16
"""A token group of more tokens than this (an open or wide date/number range: up to a few
hundred bucket tokens) is not put in SQL when another parameter drives the query: it is
checked on each candidate's token set instead (see :meth:`Finder._filtered`)."""

Matched = Select[Any] | CompoundSelect[Any]


@dataclass
class Page:
    """One page of a search: the matches of the page, included resources and the total."""

    total: int
    matches: list[Stored] = field(default_factory=list)
    included: list[Stored] = field(default_factory=list)


def exact_on_tokens(p: ParamPlan) -> bool:
    """Whether the tokens of ``p`` decide its match exactly (no post-filter needed).

    Conservative: anything not listed here is post-filtered. (The search package could own
    this rule next to each alternative; until it does, it lives here, next to its use.)
    """
    if not p.indexed:
        return False
    if p.modifier == "missing":
        return True
    if p.composite is not None:
        return False
    kind = p.param.type
    if kind == "token":
        return p.modifier != "text"
    if kind in ("reference", "uri"):
        return True
    if kind == "string":
        if p.modifier == "exact":
            return True
        if p.modifier == "contains":
            return False
        for alt in p.alternatives:
            term = normalise(_unescape(alt.raw))
            found = words(term)
            if len(found) != 1 or found[0] != term or len(term) > PREFIX_CAP:
                return False
        return True
    return False


def _unescape(raw: str) -> str:
    from hdsvault.records.search.alternatives import unescape

    return unescape(raw)


def _instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _last_updated_condition(f: LastUpdatedFilter) -> ColumnElement[bool]:
    col = resources.c.last_updated
    alts: list[ColumnElement[bool]] = []
    for q in f.alternatives:
        alts.append(_date_condition(col, q))
    return or_(*alts) if alts else false()


def _date_condition(col: ColumnElement[Any], q: DateQuery) -> ColumnElement[bool]:
    """SQL for an instant column against a date search (point value ``[t, t+1µs)``)."""
    lo, hi = _instant(q.low), _instant(q.high)
    p = q.prefix
    if p == "eq":
        return and_(col >= lo, col < hi)
    if p == "ne":
        return or_(col < lo, col >= hi)
    if p in ("gt", "sa"):
        return col >= hi
    if p in ("lt", "eb"):
        return col < lo
    if p == "ge":
        return col >= lo
    if p == "le":
        return col < hi
    wlo, whi = _instant(q.low - q.window), _instant(q.high + q.window)  # ap
    return and_(col >= wlo, col < whi)


class Finder:
    """Searches of one tenant on one connection."""

    def __init__(self, conn: Connection, store: RecordStore, tenant: str) -> None:
        self.conn = conn
        self.store = store
        self.tenant = tenant
        self.tokens: MemoTokens = store.tokens(conn, tenant)
        self.keys = store.data_keys(conn, tenant)

    # -------------------------------------------------------------- SQL

    def _group(self, group: Iterable[bytes]) -> ColumnElement[bool]:
        toks = sorted(set(group))
        if not toks:
            return false()
        sub = select(search_tokens.c.resource_id).where(search_tokens.c.token.in_(toks))
        return resources.c.resource_id.in_(sub)

    def _param(self, p: ParamPlan) -> ColumnElement[bool]:
        alts = [
            and_(*[self._group(g) for g in groups]) if groups else true()
            for groups in p.token_groups(self.tokens)
        ]
        cond = or_(*alts) if alts else false()
        return not_(cond) if p.negated else cond

    def _token_ids(self, toks: Iterable[bytes]) -> Select[Any]:
        wanted = sorted(set(toks))
        stmt = select(search_tokens.c.resource_id).where(search_tokens.c.token.in_(wanted))
        return stmt.distinct() if len(wanted) > 1 else stmt

    def matched(self, plan: SearchPlan) -> Matched | None:
        """The matching ids from ``search_tokens`` alone, when the plan allows it (else None).

        Why: tokens exist only for the current version of live resources (a delete removes
        them), so a plan made of positive token parameters only is answered by index-only
        range scans of the token primary key - one per token, combined with UNION (OR) and
        INTERSECT (AND) - without touching ``resources`` row by row. Negations, ``_id``,
        ``_lastUpdated`` and unindexed parameters need the set of all resources: None.
        """
        if plan.ids or plan.last_updated or not plan.params:
            return None
        parts: list[Matched] = []
        simple: list[frozenset[bytes]] = []
        for p in plan.params:
            if p.negated or not p.indexed:
                return None
            alts: list[list[frozenset[bytes]]] = []
            for groups in p.token_groups(self.tokens):
                if not groups:
                    return None  # an alternative met by every resource
                if all(groups):
                    alts.append(groups)
            if not alts:
                return None  # never met: the general path answers it (false())
            if all(len(g) == 1 for g in alts):
                toks = frozenset().union(*(g[0] for g in alts))
                simple.append(toks)
                parts.append(self._token_ids(toks))
                continue
            sels: list[Matched] = []
            for groups in alts:
                each = [self._token_ids(g) for g in groups]
                sels.append(intersect(*each) if len(each) > 1 else each[0])
            parts.append(union(*sels) if len(sels) > 1 else sels[0])
        if len(parts) == 1:
            return parts[0]
        if len(simple) == len(parts):
            probed = self._probed(simple)
            if probed is not None:
                return probed
        return intersect(*parts)

    def _probed(self, sets: list[frozenset[bytes]]) -> Select[Any] | None:
        """AND of token sets as a walk of the smallest one probing the others (or None).

        Why: ``INTERSECT`` reads every row of every set, so ``subject=X&code=<weight>`` costs
        as much as all the weights of the database; walking the patient's rows and probing
        the weight token for each id costs O(smaller set). Which set is smaller is found by
        counting each one up to :data:`_PROBE_LIMIT` rows (bounded cost); when none is that
        small, or the probed sets have many tokens (one index seek per token and candidate),
        None: INTERSECT stays the better plan.
        """
        sizes = []
        for toks in sets:
            sub = (
                select(search_tokens.c.resource_id)
                .where(search_tokens.c.token.in_(sorted(toks)))
                .limit(_PROBE_LIMIT + 1)
                .subquery("probe")
            )
            sizes.append(int(self.conn.execute(select(func.count()).select_from(sub)).scalar_one()))
        first = min(range(len(sets)), key=sizes.__getitem__)
        others = [t for i, t in enumerate(sets) if i != first]
        if sizes[first] > _PROBE_LIMIT or any(len(t) > _WIDE_GROUP for t in others):
            return None
        walk = search_tokens.alias("walk")
        cond: list[ColumnElement[bool]] = [walk.c.token.in_(sorted(sets[first]))]
        for i, toks in enumerate(others):
            probe = search_tokens.alias(f"probe_{i}")
            cond.append(
                select(probe.c.resource_id)
                .where(probe.c.token.in_(sorted(toks)), probe.c.resource_id == walk.c.resource_id)
                .exists()
            )
        stmt = select(walk.c.resource_id).where(*cond)
        return stmt.distinct() if len(sets[first]) > 1 else stmt

    def condition(self, plan: SearchPlan, skip: Sequence[ParamPlan] = ()) -> ColumnElement[bool]:
        """The SQL condition of ``plan`` (``skip``: parameters checked elsewhere)."""
        rt = plan.resource_type
        parts: list[ColumnElement[bool]] = [
            resources.c.tenant_id == self.tenant,
            resources.c.resource_type == rt,
            resources.c.deleted.is_(False),
        ]
        for ids in plan.ids:
            parts.append(resources.c.resource_id.in_(list(ids)))
        for f in plan.last_updated:
            parts.append(_last_updated_condition(f))
        for p in plan.params:
            if not any(p is q for q in skip):
                parts.append(self._param(p))
        return and_(*parts)

    def _driver(self, plan: SearchPlan) -> Any | None:
        """The token lookup that should drive the query (the first plain indexed group).

        Why: with ``ORDER BY last_updated LIMIT n``, SQLite prefers walking the listing index
        and probing every row, which costs O(resources of the type); starting from the
        matching tokens costs O(matches). The driving lookup stays in the WHERE too.
        """
        p = self._driver_param(plan)
        if p is None:
            return None
        # OR of alternatives of one group each = one IN over the union of their tokens.
        union = sorted(set().union(*(g[0] for g in p.token_groups(self.tokens))))
        return (
            select(search_tokens.c.resource_id)
            .where(search_tokens.c.token.in_(union))
            .distinct()
            .subquery("driver")
        )

    def _driver_param(self, plan: SearchPlan) -> ParamPlan | None:
        for p in plan.params:
            if p.negated or not p.indexed:
                continue
            groups = p.token_groups(self.tokens)
            if groups and all(len(g) == 1 and g[0] for g in groups):
                return p
        return None

    def _wide(self, plan: SearchPlan) -> list[ParamPlan]:
        """Parameters to check on the candidates' token sets rather than in SQL.

        Why: ``resource_id IN (SELECT ... WHERE token IN (<hundreds of bucket tokens>))`` is
        planned as a list built once from every row of those tokens - for ``date=ge2015``
        every resource of the type since 2015, so its cost grows with the database, not with
        the answer. When another parameter drives the query (its matches are the
        candidates), testing each candidate's current token set (``resources.tokens``, the
        same tokens as its index rows) costs a few microseconds per candidate instead.
        """
        driver = self._driver_param(plan)
        if driver is None:
            return []
        return [
            p
            for p in plan.params
            if p is not driver
            and p.indexed
            and any(len(g) > _WIDE_GROUP for alt in p.token_groups(self.tokens) for g in alt)
        ]

    def _from(self, plan: SearchPlan) -> Any:
        versions = storage.CURRENT_VERSIONS
        driver = self._driver(plan)
        if driver is None:
            return versions
        return driver.join(
            versions,
            and_(
                resources.c.tenant_id == self.tenant,
                resources.c.resource_type == plan.resource_type,
                resources.c.resource_id == driver.c.resource_id,
            ),
        )

    def _rows(
        self, plan: SearchPlan, order: Sequence[Any], skip: Sequence[ParamPlan] = ()
    ) -> Select[Any]:
        return (
            select(
                resources.c.resource_type,
                resources.c.resource_id,
                resource_versions.c.version_id,
                resource_versions.c.last_updated,
                resource_versions.c.deleted,
                resource_versions.c.body,
                resources.c.tokens,
            )
            .select_from(self._from(plan))
            .where(self.condition(plan, skip))
            .order_by(*order)
        )

    # -------------------------------------------------------------- chains

    def resolve_chains(self, plan: SearchPlan) -> SearchPlan:
        """Run the inner searches of chained parameters, then rewrite them as references."""
        if not plan.chains:
            return plan
        limit = self.store.options.max_chain_matches
        found: list[dict[str, list[str]]] = []
        for chain in plan.chains:
            by_type: dict[str, list[str]] = {}
            for target, pairs in chain.inner_requests():
                try:
                    inner = parse_search(target, pairs, base_urls=self.store.base_urls)
                except SearchError as exc:
                    raise RecordError(Problem.INVALID, f"{chain.name}: {exc.problem}") from None
                ids = self.ids(inner, limit + 1)
                if len(ids) > limit:
                    raise RecordError(
                        Problem.TOO_COSTLY,
                        f"{chain.name}: more than {limit} {target} resources match the "
                        "chained criterion; narrow it",
                    )
                by_type[target] = ids
            found.append(by_type)
        return plan.resolve_chains(found)

    # -------------------------------------------------------------- running

    def ids(self, plan: SearchPlan, limit: int) -> list[str]:
        """Ids of up to ``limit`` exact matches (conditional operations, chains)."""
        plan = self.resolve_chains(plan)
        order = (resources.c.last_updated, resources.c.resource_id)
        if all(exact_on_tokens(p) for p in plan.params):
            return self.page_ids(plan, self.matched(plan), order, (0, limit), 0)
        out: list[str] = []
        for stored in self._filtered(plan, order):
            out.append(stored.id)
            if len(out) >= limit:
                break
        return out

    def _filtered(self, plan: SearchPlan, order: Sequence[Any]) -> Iterable[Stored]:
        """Decrypt candidates in order and yield the exact matches.

        Parameters of :meth:`_wide` are tested on each candidate's token set first, exactly
        as their SQL would (an alternative is met when each of its groups shares a token
        with the set), so a candidate SQL would have dropped is dropped before decryption.
        """
        wide = self._wide(plan)
        checks = [(p.token_groups(self.tokens), p.negated) for p in wide]
        stmt = self._rows(plan, order, wide).execution_options(yield_per=_BATCH)
        result = self.conn.execute(stmt)
        try:
            for row in result:
                if checks:
                    held = set(storage.unpack(row.tokens or b""))
                    if not all(_meets(alts, neg, held) for alts, neg in checks):
                        continue
                stored = storage.open_rows(self.keys, self.tenant, [row])[0]
                if stored.resource is not None and plan.matches(stored.resource):
                    yield stored
        finally:
            result.close()

    def count(self, plan: SearchPlan, matched: Matched | None = None) -> int:
        """Exact number of matches of an exact plan (``matched``: see :meth:`matched`)."""
        if matched is not None:
            stmt = select(func.count()).select_from(matched.subquery("m"))
        else:
            stmt = select(func.count()).select_from(resources).where(self.condition(plan))
        return int(self.conn.execute(stmt).scalar_one())

    def page_ids(
        self,
        plan: SearchPlan,
        matched: Matched | None,
        order: Sequence[Any],
        window: tuple[int, int],
        total: int,
    ) -> list[str]:
        """Ids of one page (``window`` = offset, count) of an exact plan, in ``order``.

        Only ids are selected (bodies are fetched for the page alone). With ``matched``, two
        shapes: few matches - look each one up and sort them (O(matches)); many matches per
        row of the page - walk the listing index (type, last_updated, id) in order and probe
        the matches, which stops after about (offset + count) x (resources of the type /
        matches) index entries instead of sorting all matches.
        """
        offset, count = window
        r = resources.c
        stmt: Select[Any]
        if matched is None:
            stmt = select(r.resource_id).where(self.condition(plan))
        elif total >= _WALK_FACTOR * (offset + count):
            stmt = select(r.resource_id).where(
                r.tenant_id == self.tenant,
                r.resource_type == plan.resource_type,
                r.resource_id.in_(matched),
            )
        else:
            # DISTINCT keeps the matches a materialised subquery: flattened into the join,
            # SQLite would walk the whole listing index and probe the tokens row by row.
            m = (
                matched.distinct().subquery("m")
                if isinstance(matched, Select)
                else matched.subquery("m")
            )
            stmt = select(r.resource_id).select_from(
                m.join(
                    resources,
                    and_(
                        r.tenant_id == self.tenant,
                        r.resource_type == plan.resource_type,
                        r.resource_id == m.c.resource_id,
                    ),
                )
            )
        stmt = stmt.order_by(*order).limit(count).offset(offset)
        return [row.resource_id for row in self.conn.execute(stmt)]

    def page(self, plan: SearchPlan, *, count: int, offset: int, count_only: bool = False) -> Page:
        plan = self.resolve_chains(plan)
        sort = plan.result.sort
        in_sql = all(code in SQL_SORTS for code, _ in sort)
        order: list[Any] = []
        if in_sql:
            for code, desc in sort:
                col = (
                    resources.c.last_updated if code == "_lastUpdated" else resources.c.resource_id
                )
                order.append(col.desc() if desc else col.asc())
        order += [resources.c.last_updated.asc(), resources.c.resource_id.asc()]
        exact = all(exact_on_tokens(p) for p in plan.params)
        if exact and in_sql:
            matched = self.matched(plan)
            total = self.count(plan, matched)
            if count_only or count == 0 or offset >= total:
                return Page(total)
            ids = self.page_ids(plan, matched, order, (offset, count), total)
            keys = [ResourceKey(plan.resource_type, i) for i in ids]
            rows = storage.current_rows(self.conn, self.tenant, keys)
            return Page(total, storage.open_rows(self.keys, self.tenant, rows))
        if in_sql:
            matches: list[Stored] = []
            total = 0
            for stored in self._filtered(plan, order):
                if offset <= total < offset + count and not count_only:
                    matches.append(stored)
                total += 1
            return Page(total, matches)
        hits: list[Stored] = []
        cap = self.store.options.max_sort_candidates
        for stored in self._filtered(plan, order):
            hits.append(stored)
            if len(hits) > cap:
                raise RecordError(
                    Problem.TOO_COSTLY,
                    f"_sort on {', '.join(c for c, _ in sort)} sorts at most {cap} matches; "
                    "narrow the search or sort on _lastUpdated/_id",
                )
        if count_only:
            return Page(len(hits))
        _sort_in_memory(hits, plan.resource_type, sort, self.store.base_urls)
        return Page(len(hits), hits[offset : offset + count])

    # -------------------------------------------------------------- includes

    def includes(self, plan: SearchPlan, matches: Sequence[Stored]) -> list[Stored]:
        """Resources named by ``_include`` / ``_revinclude`` for a page (bounded)."""
        inc, rev = plan.result.include, plan.result.revinclude
        if not inc and not rev:
            return []
        seen = {s.key for s in matches}
        out: list[Stored] = []
        frontier = list(matches)
        for round_no in range(_INCLUDE_ROUNDS):
            wave: list[Stored] = []
            for spec in inc:
                if round_no and not spec.iterate:
                    continue
                wave += self._forward(spec, frontier, seen)
            for spec in rev:
                if round_no and not spec.iterate:
                    continue
                wave += self._reverse(spec, frontier, seen)
            if not wave:
                break
            out += wave
            frontier = wave
            if len(out) >= MAX_INCLUDES:
                return out[:MAX_INCLUDES]
        return out

    def _forward(
        self, spec: Include, frontier: Sequence[Stored], seen: set[ResourceKey]
    ) -> list[Stored]:
        wanted: list[ResourceKey] = []
        for s in frontier:
            if s.resource is None or s.type != spec.source:
                continue
            params = _reference_params(s.type, spec.param)
            for p in params:
                for v in values_of(s.resource, p, self.store.base_urls):
                    if isinstance(v, ReferenceValue) and v.local:
                        rt, _, rid = v.local.partition("/")
                        key = ResourceKey(rt, rid)
                        if (spec.target is None or rt == spec.target) and key not in seen:
                            seen.add(key)
                            wanted.append(key)
        wanted = wanted[:MAX_INCLUDES]
        rows = storage.current_rows(self.conn, self.tenant, wanted)
        return storage.open_rows(self.keys, self.tenant, rows)

    def _reverse(
        self, spec: Include, frontier: Sequence[Stored], seen: set[ResourceKey]
    ) -> list[Stored]:
        params = _reference_params(spec.source, spec.param)
        targets = [s for s in frontier if spec.target is None or s.type == spec.target]
        if not params or not targets:
            return []
        toks = {
            self.tokens.token(f"{spec.source}.{p.code}", f"{s.type}/{s.id}")
            for p in params
            for s in targets
        }
        stmt = (
            select(resources.c.resource_type, resources.c.resource_id)
            .where(
                resources.c.tenant_id == self.tenant,
                resources.c.resource_type == spec.source,
                resources.c.deleted.is_(False),
                self._group(toks),
            )
            .order_by(resources.c.last_updated, resources.c.resource_id)
            .limit(MAX_INCLUDES)
        )
        keys = [ResourceKey(r.resource_type, r.resource_id) for r in self.conn.execute(stmt)]
        keys = [k for k in keys if k not in seen]
        seen.update(keys)
        rows = storage.current_rows(self.conn, self.tenant, keys)
        return storage.open_rows(self.keys, self.tenant, rows)


def _meets(alternatives: list[list[frozenset[bytes]]], negated: bool, held: set[bytes]) -> bool:
    """A parameter's token rule on one resource's tokens (as :meth:`Finder._param` in SQL)."""
    hit = any(all(g and not g.isdisjoint(held) for g in groups) for groups in alternatives)
    return hit != negated


def _reference_params(resource_type: str, code: str | None) -> list[SearchParam]:
    params = search_parameters(resource_type)
    if code is not None:
        p = params.get(code)
        return [p] if p is not None and p.type == "reference" else []
    return [p for p in params.values() if p.type == "reference" and p.path is not None]


# ------------------------------------------------------------------ in-memory sort


def _sortable(v: IndexValue) -> Any:
    if isinstance(v, DateValue):
        return v.low if v.low is not None else -(2**62)
    if isinstance(v, (NumberValue, QuantityValue)):
        return v.low if v.low is not None else v.high
    if isinstance(v, StringValue):
        return normalise(v.text)
    if isinstance(v, TokenValue):
        return v.code or v.text or ""
    if isinstance(v, ReferenceValue):
        return v.local or v.url or ""
    if isinstance(v, UriValue):
        return v.uri
    return None


def _sort_in_memory(
    hits: list[Stored],
    resource_type: str,
    sort: Sequence[tuple[str, bool]],
    bases: tuple[str, ...],
) -> None:
    params = search_parameters(resource_type)
    keyed: list[tuple[list[Any], Stored]] = []
    for s in hits:
        keys: list[Any] = []
        for code, desc in sort:
            if code == "_lastUpdated":
                keys.append(s.last_updated)
                continue
            if code == "_id":
                keys.append(s.id)
                continue
            vals = [_sortable(v) for v in values_of(s.resource or {}, params[code], bases)]
            vals = [v for v in vals if v is not None]
            keys.append((max if desc else min)(vals, key=_safe_key) if vals else None)
        keyed.append((keys, s))

    def compare(a: tuple[list[Any], Stored], b: tuple[list[Any], Stored]) -> int:
        for i, (_, desc) in enumerate(sort):
            x, y = a[0][i], b[0][i]
            if x is None or y is None:
                if x is None and y is None:
                    continue
                return 1 if x is None else -1  # missing values last, either direction
            c = _cmp(x, y)
            if c:
                return -c if desc else c
        return 0

    keyed.sort(key=functools.cmp_to_key(compare))
    hits[:] = [s for _, s in keyed]


def _safe_key(x: Any) -> Any:
    return (type(x).__name__, x) if not isinstance(x, (int, float)) else ("0", x)


def _cmp(x: Any, y: Any) -> int:
    try:
        return int(x > y) - int(x < y)
    except TypeError:
        return int(str(x) > str(y)) - int(str(x) < str(y))
