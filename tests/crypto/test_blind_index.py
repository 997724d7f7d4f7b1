"""Blind index: deterministic keyed tokens, separated per tenant and per field."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hdsvault.crypto.blind_index import TOKEN_SIZE, BlindIndex

ROOT = bytes(range(32))
OTHER_ROOT = bytes(range(1, 33))


def test_deterministic_per_tenant() -> None:
    a = BlindIndex(ROOT, "750712184")
    b = BlindIndex(ROOT, "750712184")  # a fresh instance, e.g. another process
    assert a.token("family", "Dupont") == b.token("family", "Dupont")
    assert a.token("family", "Dupont") == a.token("family", b"Dupont")  # str is UTF-8


def test_tenants_fields_values_and_keys_separate() -> None:
    idx = BlindIndex(ROOT, "750712184")
    base = idx.token("family", "Dupont")
    assert BlindIndex(ROOT, "130786049").token("family", "Dupont") != base
    assert BlindIndex(OTHER_ROOT, "750712184").token("family", "Dupont") != base
    assert idx.token("given", "Dupont") != base
    assert idx.token("family", "dupont") != base
    # Length prefix: moving bytes between field and value changes the token.
    assert idx.token("ab", "c") != idx.token("a", "bc")


def test_token_size_and_no_value_inside() -> None:
    idx = BlindIndex(ROOT, "750712184")
    value = "1 84 12 75 108 123 45"  # an NIR-shaped value
    token = idx.token("nir", value)
    assert len(token) == TOKEN_SIZE == 16
    assert value.encode() not in token
    for probe in (value.encode(), value.replace(" ", "").encode(), b"Dupont"):
        assert probe not in token
    # Not a plain (unkeyed) hash of the value either.
    assert token != hashlib.sha256(value.encode()).digest()[:16]


def test_matches_the_documented_construction() -> None:
    """docs/keys.md describes the derivation; a third party can recompute a token."""
    tenant, field, value = "750712184", "family", "Dupont"
    index_key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"hdsvault/blind-index/salt/v1",
        info=b"hdsvault/blind-index/v1/" + tenant.encode(),
    ).derive(ROOT)
    message = len(field).to_bytes(4, "big") + field.encode() + value.encode()
    expected = hmac.new(index_key, message, hashlib.sha256).digest()[:16]
    assert BlindIndex(ROOT, tenant).token(field, value) == expected


def test_tokens_batch_equals_single() -> None:
    idx = BlindIndex(ROOT, "750712184")
    values: list[str | bytes] = ["Dupont", b"Martin", "", "Élodie"]
    assert idx.tokens("family", values) == [idx.token("family", v) for v in values]
    assert idx.tokens("family", []) == []


def test_rejects_bad_keys_and_tenants() -> None:
    with pytest.raises(ValueError, match="32"):
        BlindIndex(b"short", "750712184")
    with pytest.raises(ValueError, match="tenant"):
        BlindIndex(ROOT, "")


def test_repr_hides_key() -> None:
    idx = BlindIndex(ROOT, "750712184")
    assert ROOT.hex() not in repr(idx)
    assert "750712184" in repr(idx)


def test_many_fields_beyond_the_state_cache() -> None:
    """The per-field state cache is bounded; tokens do not depend on whether it is hit."""
    idx = BlindIndex(ROOT, "750712184")
    fields = [f"field-{i}" for i in range(600)]
    first = [idx.token(f, "v") for f in fields]
    again = [idx.token(f, "v") for f in fields]
    fresh = BlindIndex(ROOT, "750712184")
    assert first == again == [fresh.tokens(f, ["v"])[0] for f in fields]
    assert len(set(first)) == len(fields)
