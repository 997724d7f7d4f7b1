"""Mutual TLS: a verified client certificate stands for a configured principal.

For machines that cannot hold a bearer token comfortably (lab analysers, imaging modalities,
interface engines), the TLS handshake itself authenticates: the server verifies the client's
certificate against ``[tls] client_ca_file`` and ``[[tls.clients]]`` maps its subject (as a set
of attribute=value pairs, order-insensitive) or one subjectAltName to a tenant and a role.
An unmapped certificate authenticates no one.

The certificate arrives in the ASGI scope as ``scope["extensions"]["tls"]["client_cert"]``, the
dict form of :meth:`ssl.SSLSocket.getpeercert` (only set when verification succeeded), put
there by the listener's protocol (:mod:`hdsvault.api.listeners`).
"""

from __future__ import annotations

from typing import Any

from hdsvault.access.roles import Role
from hdsvault.access.settings import TlsClientSettings, TlsSettings
from hdsvault.access.tokens import Principal

_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "emailAddress": "EMAILADDRESS",
    "serialNumber": "SERIALNUMBER",
    "domainComponent": "DC",
}
_SAN = {
    "DNS": "DNS",
    "URI": "URI",
    "EMAIL": "email",
    "IP": "IP Address",
    "IP ADDRESS": "IP Address",
}


def subject_pairs(cert: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """The certificate subject as {(SHORTNAME, value)}."""
    pairs: set[tuple[str, str]] = set()
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            pairs.add((_SHORT.get(name, name).upper(), str(value)))
    return frozenset(pairs)


def parse_subject(text: str) -> frozenset[tuple[str, str]]:
    """``"CN=lis,O=CHU"`` -> {("CN", "lis"), ("O", "CHU")} (no escaped commas)."""
    pairs = set()
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise ValueError(f"subject {text!r}: {part!r} is not NAME=value")
        pairs.add((name.strip().upper(), value.strip()))
    return frozenset(pairs)


def _san_matches(selector: str, cert: dict[str, Any]) -> bool:
    kind, _, value = selector.partition(":")
    wanted = _SAN.get(kind.strip().upper())
    return wanted is not None and (wanted, value.strip()) in set(cert.get("subjectAltName", ()))


def _mapping_matches(mapping: TlsClientSettings, cert: dict[str, Any]) -> bool:
    if mapping.subject is not None:
        return parse_subject(mapping.subject) == subject_pairs(cert)
    return mapping.san is not None and _san_matches(mapping.san, cert)


def principal_from_certificate(cert: dict[str, Any], tls: TlsSettings) -> Principal | None:
    """The principal a verified client certificate stands for, or None if none is configured."""
    for mapping in tls.clients:
        if _mapping_matches(mapping, cert):
            name = mapping.name or mapping.subject or mapping.san or "?"
            return Principal(
                subject=f"mtls:{name}",
                tenant=mapping.tenant,
                role=Role(mapping.role),
                auth_method="mtls",
                display=name,
            )
    return None
