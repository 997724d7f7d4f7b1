"""OpenID Connect bearer tokens (Pro Santé Connect, a hospital's identity provider).

A bearer JWT is accepted when, in this order (the first failure names the journaled reason):

1. it is a compact JWS whose header names an algorithm on the issuer's allow-list
   (asymmetric only: ``alg: none`` and the HMAC family are refused before any key is chosen, so
   a public key can never be used as an HMAC secret);
2. its ``iss`` is a configured issuer and its ``aud`` holds that issuer's audience for a
   tenant (``[[oidc.issuers]]``: one issuer such as Pro Santé Connect can serve several
   establishments, each with its own client id);
3. the signature verifies with the issuer's key of that ``kid`` (JWKS fetched from
   ``jwks_uri``, or discovered from ``/.well-known/openid-configuration``, cached, and fetched
   again on an unknown ``kid`` at most every ``jwks_min_refresh_seconds``);
4. ``exp``, ``nbf``, ``iat`` hold with a small leeway, and the token is not older than
   ``max_token_age_seconds``;
5. ``acr`` ranks at least ``min_acr`` (Pro Santé Connect: ``eidas1``);
6. a subject, and a role (mapped from a claim), are present.

The principal's subject is ``oidc:<iss>|<sub>``; its RPPS number, care units and display name
come from configurable claims.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

from hdsvault.access.roles import Role
from hdsvault.access.settings import OidcIssuerSettings, OidcSettings
from hdsvault.access.tokens import Principal

# "EdDSA" is deprecated by RFC 9864 in favour of "Ed25519"; both stay accepted when configured.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", module="joserfc")

_MAX_JWKS_BYTES = 1024 * 1024
_MAX_TOKEN_BYTES = 16 * 1024
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class OidcError(Exception):
    """A bearer JWT that does not authenticate; ``reason`` is a short journal-friendly code."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("hdsv_")


def _b64json(part: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise OidcError("malformed-jwt") from None
    if not isinstance(value, dict):
        raise OidcError("malformed-jwt")
    return value


def _check_url(url: str, allow_loopback_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and allow_loopback_http:
        host = parts.hostname or ""
        try:
            if host == "localhost" or ip_address(host).is_loopback:
                return
        except ValueError:
            pass
    raise OidcError("insecure-issuer-url", f"{url}: issuers are reached over https only")


@dataclass
class JwksCache:
    """The signing keys of one issuer, by ``kid``: cached, refreshed on expiry or unknown kid."""

    issuer: str
    jwks_uri: str | None
    settings: OidcSettings
    client: httpx.Client
    clock: Callable[[], float] = time.monotonic
    _keys: dict[str, Key] = field(default_factory=dict)
    _anonymous: list[Key] = field(default_factory=list)
    _fetched_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def key(self, kid: str | None, alg: str) -> Key:
        now = self.clock()
        if self._fetched_at is None or now - self._fetched_at > self.settings.jwks_cache_seconds:
            self._refresh(force=True)
        found = self._find(kid, alg)
        if found is None and self._refresh(force=False):
            found = self._find(kid, alg)
        if found is None:
            raise OidcError("unknown-key", f"no key {kid!r} for {alg} in the issuer's JWKS")
        return found

    def _find(self, kid: str | None, alg: str) -> Key | None:
        kty = _KEY_TYPES.get(alg[:2])
        if kid is not None:
            key = self._keys.get(kid)
            return key if key is not None and key.key_type == kty else None
        candidates = [k for k in (*self._keys.values(), *self._anonymous) if k.key_type == kty]
        return candidates[0] if len(candidates) == 1 else None

    def _refresh(self, *, force: bool) -> bool:
        """Fetch the JWKS; without ``force``, only if the last fetch is old enough."""
        with self._lock:
            now = self.clock()
            if (
                not force
                and self._fetched_at is not None
                and now - self._fetched_at < self.settings.jwks_min_refresh_seconds
            ):
                return False
            uri = self.jwks_uri or self._discover()
            data = self._get_json(uri)
            keys: dict[str, Key] = {}
            anonymous: list[Key] = []
            for jwk in data.get("keys", []) if isinstance(data.get("keys"), list) else []:
                if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or "d" in jwk:
                    continue  # encryption keys, and private keys published by mistake
                if jwk.get("kty") not in ("RSA", "EC", "OKP"):
                    continue
                try:
                    key = import_key(jwk)
                except (JoseError, ValueError, TypeError):
                    continue
                if isinstance(key, RSAKey | ECKey | OKPKey):
                    if isinstance(jwk.get("kid"), str):
                        keys[jwk["kid"]] = key
                    else:
                        anonymous.append(key)
            self._keys, self._anonymous, self._fetched_at = keys, anonymous, now
            return True

    def _discover(self) -> str:
        meta = self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if meta.get("issuer") != self.issuer:
            raise OidcError("issuer-metadata-mismatch", "discovery document names another issuer")
        uri = meta.get("jwks_uri")
        if not isinstance(uri, str):
            raise OidcError("jwks-unavailable", "discovery document has no jwks_uri")
        _check_url(uri, self.settings.allow_insecure_loopback)
        self.jwks_uri = uri
        return uri

    def _get_json(self, url: str) -> dict[str, Any]:
        _check_url(url, self.settings.allow_insecure_loopback)
        try:
            response = self.client.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OidcError("jwks-unavailable", f"{url}: {type(exc).__name__}") from None
        if response.status_code != 200 or len(response.content) > _MAX_JWKS_BYTES:
            raise OidcError("jwks-unavailable", f"{url}: HTTP {response.status_code}")
        try:
            value = response.json()
        except ValueError:
            raise OidcError("jwks-unavailable", f"{url}: not JSON") from None
        if not isinstance(value, dict):
            raise OidcError("jwks-unavailable", f"{url}: not a JSON object")
        return value


class OidcVerifier:
    """Verifies bearer JWTs against the configured issuers (thread-safe)."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._client = client or httpx.Client(
            timeout=settings.http_timeout_seconds, trust_env=False, follow_redirects=False
        )
        self._caches: dict[str, JwksCache] = {}
        for cfg in settings.issuers:
            _check_url(cfg.issuer, settings.allow_insecure_loopback)
            cache_key = f"{cfg.issuer}|{cfg.jwks_uri or ''}"
            if cache_key not in self._caches:
                self._caches[cache_key] = JwksCache(
                    cfg.issuer, cfg.jwks_uri, settings, self._client
                )

    @property
    def enabled(self) -> bool:
        return bool(self.settings.issuers)

    def close(self) -> None:
        self._client.close()

    def verify(self, token: str) -> Principal:
        """The principal ``token`` stands for, or :class:`OidcError` with the reason."""
        if len(token) > _MAX_TOKEN_BYTES or token.count(".") != 2:
            raise OidcError("malformed-jwt")
        header_b64, payload_b64, _ = token.split(".")
        header = _b64json(header_b64)
        unverified = _b64json(payload_b64)
        cfg = self._issuer_for(unverified)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in cfg.algorithms:
            raise OidcError("algorithm-not-allowed", f"alg {alg!r} is not accepted")
        if "crit" in header:
            raise OidcError("unsupported-critical-header")
        kid = header.get("kid")
        cache = self._caches[f"{cfg.issuer}|{cfg.jwks_uri or ''}"]
        key = cache.key(kid if isinstance(kid, str) else None, alg)
        try:
            verified = jws.deserialize_compact(token, key, algorithms=[alg])
        except JoseError:
            raise OidcError("bad-signature") from None
        claims = json.loads(verified.payload or b"{}")
        if not isinstance(claims, dict) or claims != unverified:
            raise OidcError("malformed-jwt")
        self._check_times(claims)
        self._check_acr(cfg, claims)
        return self._principal(cfg, claims)

    def _issuer_for(self, claims: dict[str, Any]) -> OidcIssuerSettings:
        iss = claims.get("iss")
        candidates = [c for c in self.settings.issuers if c.issuer == iss]
        if not candidates:
            raise OidcError("unknown-issuer")
        aud = claims.get("aud")
        audiences = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
        for cfg in candidates:
            if cfg.audience in audiences:
                return cfg
        raise OidcError("wrong-audience")

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self.clock()
        leeway = self.settings.leeway_seconds
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise OidcError("missing-exp")
        if now >= exp + leeway:
            raise OidcError("expired")
        if nbf is not None and (not _is_time(nbf) or now + leeway < nbf):
            raise OidcError("not-yet-valid")
        if iat is not None:
            if not _is_time(iat) or iat > now + leeway:
                raise OidcError("issued-in-future")
            if now - iat > self.settings.max_token_age_seconds:
                raise OidcError("too-old")

    @staticmethod
    def _check_acr(cfg: OidcIssuerSettings, claims: dict[str, Any]) -> None:
        if cfg.min_acr is None:
            return
        acr = claims.get("acr")
        if not isinstance(acr, str) or acr not in cfg.acr_levels:
            raise OidcError("acr-too-low", f"acr {acr!r} is not a known level")
        if cfg.acr_levels.index(acr) < cfg.acr_levels.index(cfg.min_acr):
            raise OidcError("acr-too-low", f"acr {acr} is below {cfg.min_acr}")

    @staticmethod
    def _principal(cfg: OidcIssuerSettings, claims: dict[str, Any]) -> Principal:
        sub = claims.get(cfg.subject_claim)
        if not isinstance(sub, str) or not sub:
            raise OidcError("missing-subject")
        role = _role(cfg, claims.get(cfg.role_claim))
        pro = claims.get(cfg.professional_id_claim) if cfg.professional_id_claim else None
        units = claims.get(cfg.care_units_claim)
        if isinstance(units, str):
            units = units.split()
        care_units = (
            tuple(u for u in units if isinstance(u, str)) if isinstance(units, list) else ()
        )
        display = claims.get(cfg.display_claim)
        return Principal(
            subject=f"oidc:{cfg.issuer}|{sub}",
            tenant=cfg.tenant,
            role=role,
            professional_id=str(pro)[:64] if isinstance(pro, str | int) else None,
            care_units=care_units,
            acr=claims.get("acr") if isinstance(claims.get("acr"), str) else None,
            auth_method="oidc",
            display=display if isinstance(display, str) else None,
        )


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _role(cfg: OidcIssuerSettings, value: object) -> Role:
    values = [value] if isinstance(value, str | int) else value if isinstance(value, list) else []
    for v in values:
        mapped = cfg.role_map.get(str(v))
        if mapped is not None:
            return Role(mapped)
        try:
            return Role(str(v))
        except ValueError:
            continue
    if cfg.default_role is not None:
        return Role(cfg.default_role)
    raise OidcError("no-role", "the token carries no role this platform knows")
