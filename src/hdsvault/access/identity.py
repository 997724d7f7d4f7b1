"""One entry point for every presented credential: local API token or OpenID Connect JWT.

Faces (HTTP, ``access explain --token``) call :func:`authenticate_credential`; it recognises
the credential by its shape (``hdsv_...`` local token, three dot-separated parts for a JWT) and
raises :class:`CredentialRejected` with a short, journal-friendly reason when it does not
authenticate.
"""

from __future__ import annotations

from sqlalchemy import Engine

from hdsvault.access.oidc import OidcError, OidcVerifier, looks_like_jwt
from hdsvault.access.tokens import InvalidToken, Principal, authenticate


class CredentialRejected(Exception):
    """The credential does not authenticate; ``reason`` goes to the journal (never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def authenticate_credential(engine: Engine, verifier: OidcVerifier | None, token: str) -> Principal:
    """The principal behind a bearer credential."""
    if looks_like_jwt(token):
        if verifier is None or not verifier.enabled:
            raise CredentialRejected("oidc-not-configured")
        try:
            return verifier.verify(token)
        except OidcError as exc:
            raise CredentialRejected(f"oidc-{exc.reason}") from None
    try:
        return authenticate(engine, token)
    except InvalidToken as exc:
        raise CredentialRejected(str(exc).replace(" ", "-")) from None
