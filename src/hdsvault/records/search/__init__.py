"""FHIR R4 search over encrypted resources, as a pure library (no database, no HTTP).

Invariant 3 says search keys reach the database only as keyed blind-index tokens. This
package is everything search needs on the application side of that line:

- :mod:`.definitions` - the official R4 SearchParameters (vendored), per resource type, with
  FHIRPath compiled once (:mod:`.paths`, fhirpathpy behind :mod:`._fhirpath`);
- :mod:`.extract` - a resource's typed values per parameter (:mod:`.values`);
- :mod:`.tokens` - values -> ``(field, value)`` inputs of ``BlindIndex.token``;
- :mod:`.query` - a search request -> a :class:`SearchPlan`: candidate token groups for the
  database (supersets, never missing a match) and exact post-filters for the decrypted
  candidates; chains and ``_include`` are parsed (:mod:`.chaining`) for the store to run.

Ranges (dates, numbers, quantities) use hierarchical keyed buckets (:mod:`.buckets`); what
all this reveals to a database operator is in ``docs/search-leakage.md``.

Indexing one resource version::

    tokens = index_tokens(resource, blind_index, base_urls=settings.base_urls)

Searching::

    plan = parse_search("Observation", request_pairs, strict=prefer_strict)
    # SQL: resources of the type with, per plan.params[i], some alternative whose every
    # group meets the stored tokens (NOT that, when plan.params[i].negated; no condition
    # when not plan.params[i].indexed); _id and _lastUpdated on clear columns; chains first
    # (chain.inner_requests() for each of plan.chains), then plan.resolve_chains(ids).
    hits = [r for r in decrypt(candidates) if plan.matches(r)]
"""

from hdsvault.records.search.chaining import Chain, Include, parse_chain, parse_include
from hdsvault.records.search.definitions import SearchParam, search_parameters
from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.extract import extract
from hdsvault.records.search.query import ParamPlan, SearchPlan, parse_search
from hdsvault.records.search.tokens import (
    IndexOptions,
    TokenFunction,
    TokenInput,
    index_inputs,
    index_tokens,
    pad_tokens,
)

__all__ = [
    "Chain",
    "Include",
    "IndexOptions",
    "ParamPlan",
    "SearchError",
    "SearchParam",
    "SearchPlan",
    "TokenFunction",
    "TokenInput",
    "extract",
    "index_inputs",
    "index_tokens",
    "pad_tokens",
    "parse_chain",
    "parse_include",
    "parse_search",
    "search_parameters",
]
