"""Settings of access control and the perimeter: ``[access] [oidc] [perimeter] [tls]``.

They live here, next to the code they configure, and are mounted as sections of the one
:class:`hdsvault.config.Settings` object. This module imports nothing from hdsvault, so the
settings object can be built before anything else is loaded.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

IPNetwork = IPv4Network | IPv6Network

LOOPBACK = ("127.0.0.0/8", "::1/128")


def _networks(values: list[str] | list[IPNetwork]) -> list[IPNetwork]:
    return [ip_network(str(v), strict=False) for v in values]


# -- [access] ---------------------------------------------------------------------------------


class AccessSettings(BaseModel):
    """Which policy decides, and how break-the-glass behaves."""

    policy: str = Field(
        default="baseline",
        description="'baseline' (built-in role rules), 'builtin' (the policy file shipped in "
        "the package) or the path of a policy file (TOML or JSON)",
    )
    break_glass_seconds: float = Field(
        default=4 * 3600, ge=1, le=7 * 24 * 3600, description="How long a break-glass grant lasts"
    )
    alert_webhook_url: str | None = Field(
        default=None, description="POST JSON alerts (break-the-glass) to this URL (DPO's desk)"
    )
    alert_webhook_secret: SecretStr | None = Field(
        default=None, description="If set, alerts carry X-Hdsvault-Signature: sha256=<hmac>"
    )
    alert_webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("alert_webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return v


# -- [oidc] -----------------------------------------------------------------------------------

DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA", "Ed25519")
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
    | {"Ed25519"}
)


class OidcIssuerSettings(BaseModel):
    """One trusted OpenID Connect issuer for one tenant (Pro Santé Connect, a hospital IdP...)."""

    tenant: str = Field(description="FINESS of the establishment these tokens act for")
    issuer: str = Field(description="Exact 'iss' value, e.g. https://auth.esw.esante.gouv.fr/...")
    audience: str = Field(description="Expected 'aud' (the client id registered for hdsvault)")
    jwks_uri: str | None = Field(
        default=None,
        description="Default: discovered from <issuer>/.well-known/openid-configuration",
    )
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    min_acr: str | None = Field(default=None, description="e.g. 'eidas1' for Pro Santé Connect")
    acr_levels: list[str] = Field(
        default_factory=lambda: ["eidas1", "eidas2", "eidas3"],
        description="Known acr values, weakest first; a token's acr must rank >= min_acr",
    )
    subject_claim: str = "sub"
    professional_id_claim: str | None = Field(
        default="SubjectNameID", description="Claim carrying the RPPS/ADELI number"
    )
    role_claim: str = "hdsvault_role"
    role_map: dict[str, str] = Field(
        default_factory=dict,
        description="Claim value -> hdsvault role, e.g. {'10' = 'clinician', '60' = 'nurse'}",
    )
    default_role: str | None = Field(default=None, description="Role when the claim is absent")
    care_units_claim: str = "care_units"
    display_claim: str = "name"

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ALLOWED_ALGORITHMS]
        if bad:
            raise ValueError(f"only asymmetric signature algorithms are accepted, not {bad}")
        if not v:
            raise ValueError("at least one algorithm")
        return v

    @model_validator(mode="after")
    def _acr_known(self) -> OidcIssuerSettings:
        if self.min_acr is not None and self.min_acr not in self.acr_levels:
            raise ValueError(f"min_acr {self.min_acr!r} is not one of acr_levels {self.acr_levels}")
        return self


class OidcSettings(BaseModel):
    """Bearer JWTs from trusted issuers (``[[oidc.issuers]]``)."""

    issuers: list[OidcIssuerSettings] = Field(default_factory=list)
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    max_token_age_seconds: int = Field(
        default=24 * 3600, ge=60, description="Refuse tokens issued (iat) longer ago than this"
    )
    jwks_cache_seconds: int = Field(default=600, ge=10)
    jwks_min_refresh_seconds: float = Field(
        default=30, ge=0, description="An unknown 'kid' refetches the JWKS at most this often"
    )
    http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    allow_insecure_loopback: bool = Field(
        default=True, description="Accept http:// issuer URLs on loopback addresses (tests, dev)"
    )


# -- [perimeter] ------------------------------------------------------------------------------


class RateLimit(BaseModel):
    """A token bucket: ``rate`` requests per second on average, bursts up to ``burst``."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


ZoneName = Literal["clinical", "admin", "metrics"]

DEFAULT_ZONE_PATHS: dict[str, tuple[str, ...]] = {
    "clinical": ("/fhir", "/dicomweb", "/api", "/healthz", "/readyz"),
    "admin": ("/admin", "/healthz", "/readyz"),
    "metrics": ("/metrics", "/healthz", "/readyz"),
}


class ZoneSettings(BaseModel):
    """One listener: a zone of the network, its address, who may connect, what it serves."""

    name: ZoneName
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    allow: list[IPNetwork] = Field(default_factory=lambda: _networks(list(LOOPBACK)))
    paths: list[str] | None = Field(default=None, description="Path prefixes served here")
    tls: bool | None = Field(default=None, description="Default: TLS when [tls] is configured")

    @field_validator("allow", mode="before")
    @classmethod
    def _parse(cls, v: list[str]) -> list[IPNetwork]:
        return _networks(v)

    @property
    def served_paths(self) -> tuple[str, ...]:
        return tuple(self.paths) if self.paths is not None else DEFAULT_ZONE_PATHS[self.name]


class PerimeterSettings(BaseModel):
    """Abuse resistance at the edge: rates, sizes, time-outs, failed logins, zones."""

    enabled: bool = True
    per_address: RateLimit = RateLimit(rate=200, burst=400)
    per_identity: RateLimit = RateLimit(rate=100, burst=200)
    exempt: list[IPNetwork] = Field(
        default_factory=list, description="Addresses never rate limited (monitoring, proxies)"
    )
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=10, le=1000)
    header_timeout_seconds: float = Field(default=10, gt=0, le=300)
    body_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    keep_alive_seconds: float = Field(default=5, gt=0, le=300)
    max_connections: int = Field(default=2000, ge=1)
    login_failures_allowed: int = Field(
        default=5, ge=1, description="Failed authentications per address before backing off"
    )
    login_backoff_seconds: float = Field(default=1.0, gt=0, description="First back-off, doubled")
    login_backoff_max_seconds: float = Field(default=900, gt=0)
    login_failure_window_seconds: float = Field(
        default=900, gt=0, description="Failures older than this are forgotten"
    )
    zones: list[ZoneSettings] = Field(default_factory=list)

    @field_validator("exempt", mode="before")
    @classmethod
    def _parse(cls, v: list[str]) -> list[IPNetwork]:
        return _networks(v)

    @model_validator(mode="after")
    def _one_listener_per_zone(self) -> PerimeterSettings:
        names = [z.name for z in self.zones]
        if len(names) != len(set(names)):
            raise ValueError("each zone (clinical, admin, metrics) may appear once")
        if self.zones and "clinical" not in names:
            raise ValueError("zones need a 'clinical' listener")
        return self


# -- [tls] ------------------------------------------------------------------------------------


class TlsClientSettings(BaseModel):
    """Maps a verified client certificate to a principal (machines: lab analysers, gateways)."""

    subject: str | None = Field(default=None, description="RFC 4514 subject, e.g. 'CN=lis,O=CHU'")
    san: str | None = Field(default=None, description="e.g. 'DNS:lis.chu.example' or 'URI:...'")
    tenant: str | None = None
    role: str
    name: str | None = Field(default=None, description="Subject name for the journal")

    @model_validator(mode="after")
    def _one_selector(self) -> TlsClientSettings:
        if (self.subject is None) == (self.san is None):
            raise ValueError("give exactly one of subject or san")
        return self


class TlsSettings(BaseModel):
    """TLS on the listeners: 1.2+ with ECDHE+AEAD suites only, HSTS, optional client certs."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = Field(
        default=None, description="CA bundle that verifies client certificates (mutual TLS)"
    )
    require_client_cert: bool = False
    min_version: Literal["1.2", "1.3"] = "1.2"
    hsts_max_age: int = Field(default=63072000, ge=0)
    clients: list[TlsClientSettings] = Field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _coherent(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file needs cert_file and key_file")
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError("require_client_cert needs client_ca_file")
        return self
