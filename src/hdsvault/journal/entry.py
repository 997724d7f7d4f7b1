"""A journal entry: who did what to which data, when, from where, with what outcome.

The fields follow FHIR AuditEvent (and the IHE BALP profiles) so that entries map one to one on
``AuditEvent`` resources and SIEM events. What could reveal clinical content (a search query, a
free-text reason) goes into ``detail_sealed``: AEAD ciphertext under the tenant's data key. The
entry stays verifiable without any key, because the leaf hash covers the ciphertext bytes.

Canonical encoding (the bytes hashed into the Merkle leaf, see docs/journal.md): UTF-8 JSON with
sorted keys, no insignificant whitespace, ``null`` for absent values, times in RFC 3339 UTC with
microseconds (``2026-11-29T07:31:15.123456Z``), ``detail_sealed`` in standard base64.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class Category(StrEnum):
    """What kind of act, as the HDS and CNIL texts enumerate them."""

    ACCESS = "access"
    MODIFICATION = "modification"
    TRANSFER = "transfer"
    ADMINISTRATION = "administration"
    MOVEMENT = "movement"


class Action(StrEnum):
    """FHIR AuditEvent.action: Create, Read, Update, Delete, Execute."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(StrEnum):
    """FHIR AuditEvent.outcome codes."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"  # e.g. a denied request
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


class Severity(StrEnum):
    """Syslog-style severity, used by SIEM export and alerting (break-the-glass is ``alert``)."""

    INFO = "info"
    NOTICE = "notice"
    WARNING = "warning"
    ALERT = "alert"


PLATFORM_LOG = "platform"
"""The log of acts that concern no single tenant (tenant creation, platform keys, backups)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled act. ``seq`` is the leaf index once sequenced into its log's tree."""

    log_id: str
    time: datetime
    event_type: str  # dotted name, e.g. "fhir.read", "tenant.shred", "auth.denied"
    category: Category
    action: Action
    outcome: Outcome
    actor: str  # authenticated subject, e.g. "token:ab12..", "oidc:https://issuer|sub"
    severity: Severity = Severity.INFO
    actor_role: str | None = None
    professional_id: str | None = None  # e.g. RPPS number
    on_behalf_of: str | None = None
    objects: tuple[str, ...] = field(default_factory=tuple)  # e.g. ("Patient/5f1c..",)
    patient: str | None = None  # "Patient/<id>" whose data is concerned
    purpose_of_use: str | None = None  # e.g. "TREAT", "ETREAT" (break-the-glass)
    source_address: str | None = None
    zone: str | None = None
    request_id: str | None = None
    detail_sealed: bytes | None = None
    seq: int | None = None

    def public_fields(self) -> dict[str, Any]:
        """The fields as JSON-ready values (``seq`` excluded: it is added when hashing)."""
        return {
            "log_id": self.log_id,
            "time": format_time(self.time),
            "event_type": self.event_type,
            "category": self.category.value,
            "action": self.action.value,
            "outcome": self.outcome.value,
            "severity": self.severity.value,
            "actor": self.actor,
            "actor_role": self.actor_role,
            "professional_id": self.professional_id,
            "on_behalf_of": self.on_behalf_of,
            "objects": list(self.objects),
            "patient": self.patient,
            "purpose_of_use": self.purpose_of_use,
            "source_address": self.source_address,
            "zone": self.zone,
            "request_id": self.request_id,
            "detail_sealed": (
                base64.b64encode(self.detail_sealed).decode() if self.detail_sealed else None
            ),
        }

    def canonical_bytes(self, seq: int) -> bytes:
        """The exact bytes of leaf ``seq``: binding the entry to its position in the log."""
        data = self.public_fields()
        data["seq"] = seq
        return canonical_json(data)

    @classmethod
    def from_fields(cls, data: dict[str, Any], seq: int | None = None) -> JournalEntry:
        """Rebuild an entry from :meth:`public_fields` output (or a stored row)."""
        sealed = data.get("detail_sealed")
        return cls(
            log_id=data["log_id"],
            time=parse_time(data["time"]) if isinstance(data["time"], str) else data["time"],
            event_type=data["event_type"],
            category=Category(data["category"]),
            action=Action(data["action"]),
            outcome=Outcome(data["outcome"]),
            severity=Severity(data.get("severity") or "info"),
            actor=data["actor"],
            actor_role=data.get("actor_role"),
            professional_id=data.get("professional_id"),
            on_behalf_of=data.get("on_behalf_of"),
            objects=tuple(data.get("objects") or ()),
            patient=data.get("patient"),
            purpose_of_use=data.get("purpose_of_use"),
            source_address=data.get("source_address"),
            zone=data.get("zone"),
            request_id=data.get("request_id"),
            detail_sealed=(
                base64.b64decode(sealed) if isinstance(sealed, str) else sealed  # bytes from DB
            ),
            seq=seq,
        )


def canonical_json(data: dict[str, Any]) -> bytes:
    """UTF-8 JSON, keys sorted, no whitespace, non-ASCII kept as UTF-8 (what gets hashed).

    Byte-identical to ``json.dumps(data, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False).encode()`` for the values an entry holds (strings, lists, ints, null);
    orjson is used because the verifier spends most of its time here.
    """
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with microseconds and a 4-digit year: one canonical spelling per instant."""
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t.isoformat(timespec="microseconds") + "Z"


def safe_text(value: str) -> str:
    """``value`` made encodable as UTF-8 (lone surrogates replaced), so no entry can poison
    the sequencer: every recorded entry must have canonical bytes."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)
