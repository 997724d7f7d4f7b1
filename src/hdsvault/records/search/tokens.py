"""Token inputs: the ``(field, value)`` pairs that become keyed blind-index tokens.

Why a separate step before HMAC: the index side (a resource's values) and the query side (a
parsed search) must produce *byte-identical* inputs for equal meanings, and both are easier
to test as readable pairs than as 16-byte MACs. The store passes each pair to
``BlindIndex.token(field, value)`` (HMAC-SHA256 under the tenant's key, truncated to 16
bytes); nothing here is secret and nothing here reaches the database.

Fields are ``<ResourceType>.<param><suffix>``, so equal values of different parameters or
resource types give unrelated tokens (an operator cannot link an Observation's subject token
to an Encounter's). Suffixes and value encodings:

====================  ==========================================================
field suffix          values
====================  ==========================================================
(none), token         ``c|<code>`` (any system), ``n|<code>`` (no system),
                      ``s<len>|<system>|<code>``, ``S|<system>`` (system only)
``:text``             each normalised word (whole) of display/text
``:of-type``          ``<len>|<type system>|<len>|<type code>|<value>``
(none), string        prefixes (<= 24 chars) of each normalised word (<= 32 words)
``:contains``         trigrams of the first 64 normalised characters
``:exact``            the value as written
(none), reference     ``Type/id``, or the absolute/canonical URL (and URL without version)
``:identifier``       token encodings of ``Reference.identifier``
(none), uri           the URI (and without ``|version``)
``#y #m #d``          date buckets touched (``2020``, ``2020:03``, ``2020:03:15``,
                      ``before``, ``after``); ``#Y #M`` buckets fully covered
``#x #o #s``          ``long``; open-ended from year; open-started until year
``#n #N``             number buckets touched / fully covered (see :mod:`.buckets`)
``#unit``             quantity unit: ``c|<code or unit>``, ``s<len>|<system>|<code>``
``#p``                ``1``: the parameter has a value (for ``:missing``)
====================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

from hdsvault.records.search.buckets import BucketTokens, date_index, day_span, number_index
from hdsvault.records.search.dates import DAY_US
from hdsvault.records.search.text import PREFIX_CAP, searchable, trigrams, words
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

__all__ = [
    "IndexOptions",
    "TokenFunction",
    "TokenInput",
    "bucket_inputs",
    "index_input_sets",
    "index_inputs",
    "index_tokens",
    "pad_tokens",
    "token_code_inputs",
]


class TokenFunction(Protocol):
    """What the search package needs from ``hdsvault.crypto.blind_index.BlindIndex``."""

    def token(self, field: str, value: str | bytes) -> bytes: ...


class TokenInput(NamedTuple):
    """One keyed-token input: the field (``Patient.name``) and the value (``dup``)."""

    field: str
    value: str


@dataclass(frozen=True)
class IndexOptions:
    """Optional indexes; index and queries of one deployment must use the same options.

    ``token_text`` enables ``:text`` on token parameters (one token per word of a display);
    ``string_contains`` enables ``:contains`` on strings (trigram tokens). Both cost tokens
    per resource (and reveal more about string lengths: see ``docs/search-leakage.md``).

    ``unindexed`` lists parameters (``Patient.gender``) that get *no* token at all, for
    values too few to hide from frequency analysis: they remain searchable as a post-filter
    next to at least one indexed parameter (``parse_search`` refuses them alone).
    """

    token_text: bool = True
    string_contains: bool = True
    unindexed: frozenset[str] = frozenset()


DEFAULT_OPTIONS = IndexOptions()
PRESENT = "1"


def token_code_inputs(system: str | None, code: str | None) -> list[str]:
    """Encodings a coded value is indexed under (see the module table)."""
    out: list[str] = []
    if code is not None:
        out.append("c|" + code)
        if system is None:
            out.append("n|" + code)
        else:
            out.append(f"s{len(system)}|{system}|{code}")
    if system is not None:
        out.append("S|" + system)
    return out


def of_type_input(type_system: str | None, type_code: str, value: str) -> str:
    ts = type_system or ""
    return f"{len(ts)}|{ts}|{len(type_code)}|{type_code}|{value}"


def word_prefixes(text: str) -> set[str]:
    """Prefixes (up to :data:`PREFIX_CAP`) of every word of the searchable form of text."""
    out: set[str] = set()
    for w in words(searchable(text)):
        for k in range(1, min(len(w), PREFIX_CAP) + 1):
            out.add(w[:k])
    return out


def bucket_inputs(field: str, b: BucketTokens, kind: str) -> set[TokenInput]:
    """Token inputs of bucket labels; ``kind`` is ``date`` or ``number``."""
    out: set[TokenInput] = set()
    if kind == "date":
        for label in b.touch:
            out.add(TokenInput(field + ("#y", "#m", "#d")[label.count(":")], label))
        for label in b.full:
            out.add(TokenInput(field + ("#Y", "#M")[label.count(":")], label))
    else:
        out.update(TokenInput(field + "#n", label) for label in b.touch)
        out.update(TokenInput(field + "#N", label) for label in b.full)
    out.update(TokenInput(field + "#" + k, v) for k, v in b.extra)
    return out


def _unit_inputs(q: QuantityValue) -> list[str]:
    out: list[str] = []
    if q.code is not None:
        out.append("c|" + q.code)
        if q.system is not None:
            out.append(f"s{len(q.system)}|{q.system}|{q.code}")
    if q.unit is not None and q.unit != q.code:
        out.append("c|" + q.unit)
    return out


@lru_cache(maxsize=1 << 16)
def value_inputs(
    field: str, v: IndexValue, options: IndexOptions = DEFAULT_OPTIONS
) -> frozenset[TokenInput]:
    """Token inputs of one index value of the parameter whose field base is ``field``.

    Cached: clinical data repeats itself (the same codes, units, tags and dates on many
    resources), and index values are immutable and hashable.
    """
    out: set[TokenInput] = set()
    if isinstance(v, TokenValue):
        out.update(TokenInput(field, x) for x in token_code_inputs(v.system, v.code))
        if options.token_text and v.text:
            out.update(TokenInput(field + ":text", w) for w in words(searchable(v.text)))
        if v.code is not None:
            for ts, tc in v.of_type:
                out.add(TokenInput(field + ":of-type", of_type_input(ts, tc, v.code)))
    elif isinstance(v, StringValue):
        if v.fuzzy:
            out.update(TokenInput(field, p) for p in word_prefixes(v.text))
            if options.string_contains:
                tri = trigrams(searchable(v.text))
                out.update(TokenInput(field + ":contains", t) for t in tri)
        if v.exact:
            out.add(TokenInput(field + ":exact", v.text))
    elif isinstance(v, DateValue):
        if v.low is not None and v.high is not None:
            out |= _day_span_inputs(field, day_span(v.low, v.high))
        else:
            out |= bucket_inputs(field, date_index(v.low, v.high), "date")
    elif isinstance(v, ReferenceValue):
        for x in (v.local, v.url, v.canonical):
            if x is not None:
                out.add(TokenInput(field, x))
        if v.identifier is not None:
            ident = v.identifier
            out.update(
                TokenInput(field + ":identifier", x)
                for x in token_code_inputs(ident.system, ident.code)
            )
    elif isinstance(v, QuantityValue):
        out |= bucket_inputs(field, number_index(v.low, v.high), "number")
        out.update(TokenInput(field + "#unit", x) for x in _unit_inputs(v))
    elif isinstance(v, NumberValue):
        out |= bucket_inputs(field, number_index(v.low, v.high), "number")
    elif isinstance(v, UriValue):
        out.add(TokenInput(field, v.uri))
        if v.canonical is not None:
            out.add(TokenInput(field, v.canonical))
    return frozenset(out)


@lru_cache(maxsize=1 << 16)
def _day_span_inputs(field: str, span: tuple[int, int]) -> frozenset[TokenInput]:
    """Token inputs of a bounded date value, by its :func:`.buckets.day_span`.

    Why: instants are nearly all distinct (``2020-03-15T10:42:07Z``), so :func:`value_inputs`
    misses on them, while their buckets depend on the days only; this cache is hit instead.
    """
    first, last = span
    return frozenset(bucket_inputs(field, date_index(first * DAY_US, (last + 1) * DAY_US), "date"))


@lru_cache(maxsize=1 << 12)
def _presence(field: str) -> frozenset[TokenInput]:
    return frozenset({TokenInput(field + "#p", PRESENT)})


def index_input_sets(
    resource_type: str,
    values: Mapping[str, Iterable[IndexValue]],
    options: IndexOptions = DEFAULT_OPTIONS,
) -> Iterator[frozenset[TokenInput]]:
    """The token inputs of a resource version, as the (cached, shared) sets of each value.

    Why sets: equal values give the *same* frozenset object (see :func:`value_inputs`), so
    a caller can key a memo of their tokens by it (``records.indexing``).
    """
    for code, vals in values.items():
        field = f"{resource_type}.{code}"
        if field in options.unindexed:
            continue
        any_value = False
        for v in vals:
            yield value_inputs(field, v, options)
            any_value = True
        if any_value:
            yield _presence(field)


def index_inputs(
    resource_type: str,
    values: Mapping[str, Iterable[IndexValue]],
    options: IndexOptions = DEFAULT_OPTIONS,
) -> set[TokenInput]:
    """All token inputs of a resource version, from :func:`.extract.extract`'s output."""
    out: set[TokenInput] = set()
    for inputs in index_input_sets(resource_type, values, options):
        out |= inputs
    return out


def index_tokens(
    resource: Mapping[str, Any],
    token_fn: TokenFunction,
    base_urls: Iterable[str] = (),
    options: IndexOptions = DEFAULT_OPTIONS,
) -> set[bytes]:
    """The keyed tokens to store for one resource version (extract + inputs + HMAC)."""
    from hdsvault.records.search.extract import extract

    rt = resource.get("resourceType")
    if not isinstance(rt, str):
        return set()
    inputs = index_inputs(rt, extract(resource, base_urls), options)
    token = token_fn.token
    return {token(field, value) for field, value in inputs}


def pad_tokens(tokens: set[bytes], quantum: int = 16, size: int = 16) -> set[bytes]:
    """Add random dummy tokens up to the next multiple of ``quantum`` (hides exact counts).

    Dummies are uniformly random ``size``-byte strings: indistinguishable from HMAC output
    and, with probability ~2**-128 each, never equal to a real token, so they match no
    query. The count then leaks only ``ceil(n / quantum)``.
    """
    if quantum <= 1:
        return set(tokens)
    out = set(tokens)
    target = -(-max(len(out), 1) // quantum) * quantum
    while len(out) < target:
        out.add(os.urandom(size))
    return out
