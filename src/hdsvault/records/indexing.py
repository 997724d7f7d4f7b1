"""Blind-index tokens of a resource version, with a memo of recent (field, value) pairs.

Why a memo: most token inputs repeat across resources of a tenant (code systems, codes,
date buckets, the patient a record points to), and an HMAC costs a few microseconds while
a dictionary hit costs a tenth of that; on Synthea about two thirds of the inputs of an
import are repeats. The memo holds tokens only (never values on disk), is per tenant and
per process, and is bounded: it is dropped whole when full (simple and allocation-free).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from hdsvault.crypto.blind_index import BlindIndex
from hdsvault.records.model import Json
from hdsvault.records.search import IndexOptions, TokenFunction, extract, pad_tokens
from hdsvault.records.search.tokens import DEFAULT_OPTIONS, TokenInput, index_input_sets

_MEMO_LIMIT = 400_000
_SET_MEMO_LIMIT = 100_000
PAD_QUANTUM = 16
"""Token sets are padded with random dummies to a multiple of this, so a resource's token
count reveals only ``ceil(n / 16)`` (``docs/search-leakage.md`` §2.2)."""


class MemoTokens:
    """``token(field, value)`` of a tenant's :class:`BlindIndex`, memoised (thread-safe).

    Two memos: single tokens (queries), and the token sets of whole index values
    (:meth:`token_set`, the indexer: one lookup per value instead of one per input).
    """

    __slots__ = ("_index", "_lock", "_memo", "_sets")

    def __init__(self, index: BlindIndex) -> None:
        self._index = index
        self._memo: dict[tuple[str, str | bytes], bytes] = {}
        self._sets: dict[frozenset[TokenInput], frozenset[bytes]] = {}
        self._lock = threading.Lock()

    @property
    def tenant(self) -> str:
        return self._index.tenant

    def token(self, field: str, value: str | bytes) -> bytes:
        key = (field, value)
        found = self._memo.get(key)
        if found is None:
            found = self._index.token(field, value)
            if len(self._memo) >= _MEMO_LIMIT:
                with self._lock:
                    self._memo = {}
            self._memo[key] = found
        return found

    def token_set(self, inputs: frozenset[TokenInput]) -> frozenset[bytes]:
        """The tokens of a set of inputs (memoised by the set: values repeat)."""
        found = self._sets.get(inputs)
        if found is None:
            token = self.token
            found = frozenset(token(f, v) for f, v in inputs)
            if len(self._sets) >= _SET_MEMO_LIMIT:
                with self._lock:
                    self._sets = {}
            self._sets[inputs] = found
        return found


def resource_tokens(
    resource: Json,
    tokens: TokenFunction,
    base_urls: Iterable[str] = (),
    options: IndexOptions = DEFAULT_OPTIONS,
) -> set[bytes]:
    """The keyed tokens to store for one resource version (see ``records.search``)."""
    rt = resource.get("resourceType")
    if not isinstance(rt, str):
        return set()
    sets = index_input_sets(rt, extract(resource, tuple(base_urls)), options)
    out: set[bytes] = set()
    if isinstance(tokens, MemoTokens):
        for inputs in sets:
            out |= tokens.token_set(inputs)
    else:
        token = tokens.token
        for inputs in sets:
            out.update(token(f, v) for f, v in inputs)
    return pad_tokens(out, PAD_QUANTUM)
