"""Who a DICOM peer is: its calling AE title, mapped to a tenant and a role by the settings.

DIMSE has no authentication beyond AE titles (TLS aside), so the mapping is explicit and
closed: an AE title not listed is refused at association time, and a C-MOVE destination must
be a listed peer of the same tenant with a host and port (never the address the request came
from: a peer cannot make hdsvault send images to an arbitrary host).
"""

from __future__ import annotations

from dataclasses import dataclass

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.config import DicomPeerSettings, DicomSettings
from hdsvault.records.model import Caller


@dataclass(frozen=True)
class Peer:
    ae_title: str
    tenant: str
    role: Role
    host: str | None
    port: int | None

    def principal(self) -> Principal:
        return Principal(
            subject=f"dicom:{self.ae_title}",
            tenant=self.tenant,
            role=self.role,
            auth_method="dicom-ae",
            display=self.ae_title,
        )

    def caller(self, address: str | None) -> Caller:
        return Caller(self.principal(), self.tenant, source_address=address)


def _peer(p: DicomPeerSettings) -> Peer:
    return Peer(p.ae_title.strip(), p.tenant, Role(p.role), p.host, p.port)


class Peers:
    """The configured peers, by AE title."""

    def __init__(self, settings: DicomSettings) -> None:
        self._by_title = {p.ae_title.strip(): _peer(p) for p in settings.peers}

    def titles(self) -> list[str]:
        return list(self._by_title)

    def tenants(self) -> set[str]:
        """The establishments whose instances the peers may send."""
        return {p.tenant for p in self._by_title.values()}

    def get(self, ae_title: str) -> Peer | None:
        return self._by_title.get(ae_title.strip())

    def destination(self, caller: Peer, ae_title: str) -> Peer | None:
        """The C-MOVE destination ``ae_title`` if it may receive ``caller``'s tenant's data."""
        dest = self.get(ae_title)
        if dest is None or dest.tenant != caller.tenant or not dest.host or not dest.port:
            return None
        return dest
