"""Helpers of the search tests: a stand-in blind index, candidate checks, the Synthea corpus.

The token function here is HMAC-SHA256 under a fixed test key, truncated to 16 bytes: the
same shape as ``hdsvault.crypto.blind_index.BlindIndex.token`` without depending on it, so
these tests exercise the search package alone.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hdsvault.records.search.extract import extract
from hdsvault.records.search.query import ParamPlan
from hdsvault.records.search.tokens import index_inputs

SYNTHEA = Path("/work/shared/data/synthea-r4")
TEST_KEY = b"hdsvault search tests: not a real key...."


class HmacTokens:
    """``token(field, value)`` as HMAC-SHA256(key, len(field) || field || value)[:16]."""

    def __init__(self, key: bytes = TEST_KEY) -> None:
        self.key = key
        self.calls = 0

    def token(self, field: str, value: str | bytes) -> bytes:
        self.calls += 1
        f = field.encode()
        v = value.encode() if isinstance(value, str) else value
        msg = len(f).to_bytes(4, "big") + f + v
        return hmac.new(self.key, msg, hashlib.sha256).digest()[:16]


def stored_tokens(resource: Mapping[str, Any], fn: HmacTokens) -> set[bytes]:
    """What the store would keep for this resource version."""
    rt = resource["resourceType"]
    return {fn.token(i.field, i.value) for i in index_inputs(rt, extract(resource))}


_GROUPS: dict[int, tuple[ParamPlan, list[list[frozenset[bytes]]]]] = {}


def candidate(plan: ParamPlan, stored: set[bytes], fn: HmacTokens) -> bool:
    """What the database answers for one parameter, from keyed tokens only."""
    cached = _GROUPS.get(id(plan))
    if cached is None or cached[0] is not plan:
        if len(_GROUPS) > 512:
            _GROUPS.clear()
        cached = _GROUPS[id(plan)] = (plan, plan.token_groups(fn))
    hit = any(all(g & stored for g in groups) for groups in cached[1])
    return hit != plan.negated


def _rewrite(x: Any, local: Mapping[str, str]) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "reference" and isinstance(v, str) and v in local:
                x[k] = local[v]
            else:
                _rewrite(v, local)
    elif isinstance(x, list):
        for v in x:
            _rewrite(v, local)


def load_synthea() -> Iterator[dict[str, Any]]:
    """Every resource of every Synthea bundle, references rewritten as a transaction would.

    A FHIR transaction replaces ``urn:uuid:`` references to entries of the same bundle with
    the ``Type/id`` the server assigned; the store does this before indexing, so does this
    loader (ids are the Synthea ones).
    """
    for path in sorted(SYNTHEA.glob("*.json.gz")):
        with gzip.open(path) as f:
            bundle = json.load(f)
        local = {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle["entry"]
            if "fullUrl" in e
        }

        for entry in bundle["entry"]:
            _rewrite(entry["resource"], local)
            yield entry["resource"]
