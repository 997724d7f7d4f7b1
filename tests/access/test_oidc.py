"""OpenID Connect bearer tokens against a loopback issuer: accepted, and every way of failing."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from sqlalchemy import select

from hdsvault.access.oidc import OidcError, OidcVerifier
from hdsvault.access.roles import Role
from hdsvault.db.schema import journal_entries

from .kit import TENANT, issuer_settings, local_token
from support.loopback import OidcIssuer, b64url


def _denials(platform) -> list[str]:  # type: ignore[no-untyped-def]
    with platform.engine.connect() as conn:
        rows = conn.execute(
            select(
                journal_entries.c.event_type,
                journal_entries.c.outcome,
                journal_entries.c.severity,
                journal_entries.c.category,
            )
        ).all()
    return [e for e, o, s, c in rows if o == "4" and s == "warning" and c == "access"]


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
def test_valid_tokens_authenticate(make_platform, client_for, issuer: OidcIssuer, kid: str) -> None:
    platform = make_platform(oidc=issuer_settings(issuer))
    client = client_for(platform)
    r = client.get("/api/whoami", headers={"Authorization": f"Bearer {issuer.token(kid=kid)}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["role"] == "clinician" and body["tenant"] == TENANT
    assert body["subject"] == f"oidc:{issuer.url}|{issuer.claims()['sub']}"


def test_principal_carries_rpps_units_acr(issuer: OidcIssuer) -> None:
    from hdsvault.access.settings import OidcSettings

    verifier = OidcVerifier(
        OidcSettings.model_validate(
            issuer_settings(
                issuer, role_claim="profession", role_map={"10": "clinician", "60": "nurse"}
            )
        )
    )
    p = verifier.verify(issuer.token(profession="60", care_units="emergency icu"))
    assert p.role is Role.NURSE and p.professional_id == "810002909371"
    assert p.care_units == ("emergency", "icu") and p.acr == "eidas1" and p.auth_method == "oidc"
    with pytest.raises(OidcError) as exc:
        verifier.verify(issuer.token(profession="99", hdsvault_role=None))
    assert exc.value.reason == "no-role"
    verifier.close()


def _alg_none(issuer: OidcIssuer) -> str:
    header = b64url(json.dumps({"alg": "none", "kid": "rsa-1"}).encode())
    return f"{header}.{b64url(json.dumps(issuer.claims()).encode())}."


def _hs256_with_public_key(issuer: OidcIssuer) -> str:
    """The classic key-confusion forgery: HMAC keyed with the issuer's public key."""
    public = json.dumps(issuer.keys["rsa-1"].as_dict(private=False)).encode()
    signing_input = (
        b64url(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
        + "."
        + b64url(json.dumps(issuer.claims()).encode())
    )
    sig = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def _tampered(issuer: OidcIssuer) -> str:
    header, _, sig = issuer.token().split(".")
    forged = b64url(json.dumps(issuer.claims(hdsvault_role="platform-operator")).encode())
    return f"{header}.{forged}.{sig}"


def _foreign_key(issuer: OidcIssuer) -> str:
    other = OidcIssuer()  # same kid, another key: as if an attacker published their own
    try:
        return other.token(other.claims(iss=issuer.url))
    finally:
        other.close()


BAD_TOKENS = {
    "expired": (lambda i: i.token(exp=1_000_000_000, iat=999_999_000, nbf=None), "oidc-expired"),
    "wrong-audience": (lambda i: i.token(aud="someone-else"), "oidc-wrong-audience"),
    "wrong-issuer": (lambda i: i.token(iss="https://evil.example/realms/x"), "oidc-unknown-issuer"),
    "alg-none": (_alg_none, "oidc-algorithm-not-allowed"),
    "hs256-public-key": (_hs256_with_public_key, "oidc-algorithm-not-allowed"),
    "tampered": (_tampered, "oidc-bad-signature"),
    "foreign-key": (_foreign_key, "oidc-bad-signature"),
    "acr-too-low": (lambda i: i.token(acr="eidas0"), "oidc-acr-too-low"),
    "acr-missing": (lambda i: i.token(acr=None), "oidc-acr-too-low"),
    "not-yet-valid": (lambda i: i.token(nbf=4_000_000_000), "oidc-not-yet-valid"),
    "unknown-kid": (lambda i: _with_kid(i, "nope"), "oidc-unknown-key"),
    "garbage": (lambda i: "a.b.c", "oidc-malformed-jwt"),
}


def test_bad_tokens_get_401_and_a_journal_entry(
    make_platform, client_for, issuer: OidcIssuer
) -> None:
    # (failed-login throttling is tested on its own: here every attempt must reach the verifier)
    platform = make_platform(
        oidc=issuer_settings(issuer), perimeter={"login_failures_allowed": 100}
    )
    client = client_for(platform)
    for case, (make, reason) in sorted(BAD_TOKENS.items()):
        r = client.get("/api/whoami", headers={"Authorization": f"Bearer {make(issuer)}"})
        assert r.status_code == 401, (case, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer"), case
        assert f"auth.denied:{reason}" in _denials(platform), case


def test_unknown_kid_refetches_jwks_but_not_in_a_storm(issuer: OidcIssuer) -> None:
    from hdsvault.access.settings import OidcSettings

    settings = OidcSettings.model_validate(issuer_settings(issuer))
    verifier = OidcVerifier(settings)
    verifier.verify(issuer.token())
    assert issuer.jwks_fetches == 1
    for n in range(5):  # unknown kids within the refresh interval: no new fetch
        with pytest.raises(OidcError):
            verifier.verify(_with_kid(issuer, f"nope-{n}"))
    assert issuer.jwks_fetches <= 2
    verifier.close()

    eager = OidcVerifier(settings.model_copy(update={"jwks_min_refresh_seconds": 0}))
    eager.verify(issuer.token())
    issuer.add_key("rsa-2")  # key rotation at the issuer
    before = issuer.jwks_fetches
    assert eager.verify(issuer.token(kid="rsa-2")).role is Role.CLINICIAN
    assert issuer.jwks_fetches == before + 1
    eager.close()


def _with_kid(issuer: OidcIssuer, kid: str) -> str:
    from joserfc import jwt

    return jwt.encode({"alg": "RS256", "kid": kid}, issuer.claims(), issuer.keys["rsa-1"])


def test_local_tokens_keep_working(make_platform, client_for, issuer: OidcIssuer) -> None:
    platform = make_platform(oidc=issuer_settings(issuer))
    client = client_for(platform)
    token = local_token(platform, Role.NURSE)
    r = client.get("/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["role"] == "nurse"


def test_jwt_without_configured_issuer_is_refused(make_platform, client_for, issuer) -> None:
    platform = make_platform()
    r = client_for(platform).get(
        "/api/whoami", headers={"Authorization": f"Bearer {issuer.token()}"}
    )
    assert r.status_code == 401
    assert "auth.denied:oidc-not-configured" in _denials(platform)


def test_symmetric_algorithms_cannot_be_configured(issuer: OidcIssuer) -> None:
    from pydantic import ValidationError

    from hdsvault.access.settings import OidcSettings

    with pytest.raises(ValidationError, match="asymmetric"):
        OidcSettings.model_validate(issuer_settings(issuer, algorithms=["RS256", "HS256"]))
