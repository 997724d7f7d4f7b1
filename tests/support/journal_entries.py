"""Journal entries the journal tests record: a clinician's read of a patient's record."""

from __future__ import annotations

from datetime import UTC, datetime

from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome


def access(
    tenant: str, actor: str, patient: str, outcome: Outcome = Outcome.SUCCESS
) -> JournalEntry:
    """A read of ``patient``'s record by ``actor`` in ``tenant``'s log (sealed detail set)."""
    return JournalEntry(
        log_id=tenant,
        time=datetime.now(UTC),
        event_type="fhir.read",
        category=Category.ACCESS,
        action=Action.READ,
        outcome=outcome,
        actor=actor,
        actor_role="clinician",
        professional_id="10003456789",
        objects=(patient,),
        patient=patient,
        detail_sealed=b"\x01secret-ciphertext",
    )
