"""Receive one HL7 v2 message: persist it (sealed), apply it, answer the ACK.

``receive`` is the unit of work of the MLLP face::

    read MSH -> sender -> tenant (else AR, nothing stored)
    BEGIN: same (sender, control id) already stored? -> COMMIT, replay its ACK (idempotent)
           else store the message sealed (status "received") + journal hl7.receive -> COMMIT
    map to a FHIR transaction Bundle -> records service (all or nothing)
    BEGIN: status AA/AE/AR + sealed ACK + journal hl7.processed -> COMMIT -> ACK

The message is durable before anything is acknowledged (invariant 4), and its resources are
written by one transaction or not at all (invariant 7). A crash after the first commit leaves
a "received" row: the sender, getting no ACK, resends; the same control id then reprocesses
it (conditional updates make that converge). The control id is tokenised with the tenant's
blind index (``hl7/control``: sending application | facility | MSH-10), so the database does
not show it in clear.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import insert, select, update

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.config import Hl7SenderSettings, Hl7Settings
from hdsvault.crypto.keyring import TenantKeysMissing
from hdsvault.crypto.sealed import hl7_message_context
from hdsvault.db.schema import hl7_messages
from hdsvault.ingest import ack
from hdsvault.ingest.mapping import Mapper
from hdsvault.ingest.message import Message, MessageError
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome, Severity
from hdsvault.journal.store import append_many
from hdsvault.platform import Platform
from hdsvault.records.errors import RecordError
from hdsvault.records.model import Caller
from hdsvault.records.store import RecordStore

log = structlog.get_logger("hdsvault.hl7")
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")


@dataclass
class Received:
    """The ACK to send and what happened (for the face's logs and the tests)."""

    ack: str
    code: str
    duplicate: bool = False
    message_id: str | None = None


class Ingest:
    """The HL7 v2 service of one process (holds the record store it writes through)."""

    def __init__(self, platform: Platform, settings: Hl7Settings | None = None) -> None:
        self.platform = platform
        self.settings = settings or platform.settings.hl7
        self.records = RecordStore(platform)

    def sender(self, message: Message) -> Hl7SenderSettings | None:
        app, fac = message.sending_application, message.sending_facility
        for s in self.settings.senders:
            if s.application == app and s.facility in ("*", fac):
                return s
        return None

    def _ack(self, m: Message | None, code: str, err: MessageError | None = None) -> str:
        return ack.build(
            code,
            control_id=m.control_id if m else "",
            receiving_app=self.settings.receiving_application,
            receiving_fac=self.settings.receiving_facility,
            sending_app=m.sending_application if m else "",
            sending_fac=m.sending_facility if m else "",
            trigger=m.message_type[1] if m else "",
            version=m.version if m else "2.5",
            error_code=err.code if err else None,
            where=err.where if err else "",
            text=err.text if err else "",
        )

    def receive(self, raw: str, source_address: str | None = None) -> Received:
        try:
            m = Message(raw)
        except MessageError as exc:
            return Received(self._ack(None, "AR", exc), "AR")
        if not m.control_id:
            return Received(
                self._ack(
                    m, "AR", MessageError("MSH-10 (message control id) missing", "101", "MSH^1^10")
                ),
                "AR",
            )
        sender = self.sender(m)
        if sender is None:
            unknown = MessageError(
                f"sending application {m.sending_application!r} / facility "
                f"{m.sending_facility!r} is not configured",
                "204",
                "MSH^1^3",
                True,
            )
            return Received(self._ack(m, "AR", unknown), "AR")
        tenant = sender.tenant
        caller = Caller(
            Principal(
                f"hl7:{m.sending_application}|{m.sending_facility}"[:255],
                tenant,
                Role.SERVICE,
                auth_method="hl7-mllp",
            ),
            tenant,
            source_address=source_address,
        )
        engine = self.platform.engine
        keyring = self.platform.keyring
        kind, event = m.message_type
        try:
            with engine.begin() as conn:
                index = keyring.blind_index(conn, tenant)
                keys = keyring.data_keys(conn, tenant)
                token = index.token(
                    "hl7/control", f"{m.sending_application}|{m.sending_facility}|{m.control_id}"
                )
                row = conn.execute(
                    select(hl7_messages.c.id, hl7_messages.c.status, hl7_messages.c.ack).where(
                        hl7_messages.c.tenant_id == tenant, hl7_messages.c.control_token == token
                    )
                ).first()
                if row is not None and row.status != "received" and row.ack is not None:
                    text = keys.open(row.ack, hl7_message_context(tenant, row.id, "ack")).decode()
                    append_many(
                        conn, [self._entry(caller, "hl7.duplicate", row.id, Outcome.SUCCESS)]
                    )
                    return Received(text, row.status, duplicate=True, message_id=row.id)
                if row is None:
                    mid = str(uuid.uuid4())
                    conn.execute(
                        insert(hl7_messages).values(
                            tenant_id=tenant,
                            id=mid,
                            control_token=token,
                            message_type=f"{kind}^{event}"[:16],
                            status="received",
                            key_version=keys.current_version,
                            message=bytes(
                                keys.seal(m.text.encode("utf-8"), hl7_message_context(tenant, mid))
                            ),
                            source_address=(source_address or "")[:64] or None,
                            received_at=datetime.now(UTC),
                        )
                    )
                    append_many(conn, [self._entry(caller, "hl7.receive", mid, Outcome.SUCCESS)])
                else:
                    mid = row.id  # stored, never processed (crash): process it now
        except TenantKeysMissing:
            gone = MessageError(
                f"establishment {tenant} is unknown or shredded", "207", "MSH^1^3", True
            )
            return Received(self._ack(m, "AR", gone), "AR")
        code, err = self._apply(m, caller, sender)
        text = self._ack(m, code, err)
        with engine.begin() as conn:
            keys = keyring.data_keys(conn, tenant)
            conn.execute(
                update(hl7_messages)
                .where(hl7_messages.c.tenant_id == tenant, hl7_messages.c.id == mid)
                .values(
                    status=code,
                    ack=bytes(keys.seal(text.encode(), hl7_message_context(tenant, mid, "ack"))),
                    processed_at=datetime.now(UTC),
                )
            )
            outcome = Outcome.SUCCESS if code == "AA" else Outcome.MINOR_FAILURE
            append_many(conn, [self._entry(caller, f"hl7.processed:{code}", mid, outcome)])
        return Received(text, code, message_id=mid)

    def _apply(
        self, m: Message, caller: Caller, sender: Hl7SenderSettings
    ) -> tuple[str, MessageError | None]:
        processing = m.msh.get(11, 1).upper()
        if processing and processing not in ("P", "T", "D"):
            return "AR", MessageError(
                f"processing id {processing!r} not supported", "202", "MSH^1^11", True
            )
        if m.version and m.version not in SUPPORTED_VERSIONS:
            return "AR", MessageError(
                f"HL7 version {m.version!r} not supported", "203", "MSH^1^12", True
            )
        try:
            bundle = Mapper(m, sender.application).bundle()
        except MessageError as exc:
            return ("AR" if exc.reject else "AE"), exc
        from hdsvault.records import bundles

        try:
            bundles.process(self.records, caller, bundle)
        except RecordError as exc:
            return "AE", MessageError(f"not applied: {exc.message}"[:250], "207", "")
        except Exception as exc:  # never half-written: the records transaction rolled back
            log.error("hl7.apply-failed", error=type(exc).__name__)
            return "AE", MessageError("application internal error", "207", "")
        return "AA", None

    @staticmethod
    def _entry(caller: Caller, event: str, mid: str, outcome: Outcome) -> JournalEntry:
        return JournalEntry(
            log_id=caller.tenant,
            time=datetime.now(UTC),
            event_type=event[:64],
            category=Category.TRANSFER,
            action=Action.CREATE,
            outcome=outcome,
            severity=Severity.INFO if outcome is Outcome.SUCCESS else Severity.WARNING,
            actor=caller.principal.subject,
            actor_role=str(caller.principal.role),
            objects=(f"Hl7Message/{mid}",),
            source_address=caller.source_address,
            request_id=caller.request_id,
        )
