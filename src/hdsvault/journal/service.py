"""What the rest of the platform asks of the journal: record, integrate, verify, prove.

``record`` is the one service-layer hook: every service calls it with the connection of the
transaction that does the act, so the act and its trace commit together (invariant 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from hdsvault.db.engine import read_connection
from hdsvault.db.schema import journal_checkpoints
from hdsvault.journal import checkpoint as ckpt
from hdsvault.journal import store
from hdsvault.journal.entry import (
    PLATFORM_LOG,
    Action,
    Category,
    JournalEntry,
    Outcome,
    Severity,
)
from hdsvault.journal.merkle import inclusion_proof, root_at, verify_inclusion
from hdsvault.journal.sequencer import Integration, integrate_all
from hdsvault.journal.tree import DbNodeStore
from hdsvault.journal.verify import VerifyReport, all_log_ids, verify_log
from hdsvault.periodic import PeriodicTask
from hdsvault.platform import Platform

record = store.append
"""``record(conn, entry)``: journal ``entry`` inside the transaction of ``conn``."""


class JournalError(Exception):
    """A journal request that cannot be served (unknown log, index out of range...)."""


def admin_entry(
    event_type: str,
    actor: str,
    *,
    log_id: str = PLATFORM_LOG,
    action: Action = Action.EXECUTE,
    objects: tuple[str, ...] = (),
    outcome: Outcome = Outcome.SUCCESS,
    severity: Severity = Severity.NOTICE,
    role: str | None = "platform-operator",
) -> JournalEntry:
    """An administration act (tenant, keys, tokens, backups...) by ``actor``."""
    return JournalEntry(
        log_id=log_id,
        time=datetime.now(UTC),
        event_type=event_type,
        category=Category.ADMINISTRATION,
        action=action,
        outcome=outcome,
        actor=actor,
        actor_role=role,
        objects=objects,
        severity=severity,
    )


def integrate(platform: Platform) -> list[Integration]:
    """Sequence pending entries of every log and sign their checkpoints."""
    return integrate_all(platform.engine, platform.journal_signer())


def verify(
    platform: Platform,
    *,
    external_note: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Recompute and check every log (and an external checkpoint, if given)."""
    signer = platform.journal_signer()
    external: ckpt.Checkpoint | None = None
    if external_note is not None:
        external = ckpt.verify_note(external_note, signer.verifier_key)
    with read_connection(platform.engine) as conn:
        logs = all_log_ids(conn)
        if external is not None:
            ext_log = external.origin.rpartition("/")[2]
            if ext_log not in logs:
                logs.append(ext_log)
        reports = [
            verify_log(
                conn,
                signer,
                log_id,
                external=external
                if external and external.origin == signer.origin(log_id)
                else None,
                progress=progress,
            )
            for log_id in logs
        ]
    return VerifyReport(reports)


def latest_checkpoint(platform: Platform, log_id: str = PLATFORM_LOG) -> str:
    """The newest signed checkpoint note of ``log_id``."""
    with read_connection(platform.engine) as conn:
        note = conn.execute(
            select(journal_checkpoints.c.note)
            .where(journal_checkpoints.c.log_id == log_id)
            .order_by(journal_checkpoints.c.size.desc())
            .limit(1)
        ).scalar_one_or_none()
    if note is None:
        raise JournalError(f"log {log_id} has no checkpoint yet")
    return str(note)


def prove_inclusion(platform: Platform, log_id: str, index: int) -> dict[str, Any]:
    """An inclusion proof of entry ``index`` in the latest checkpoint, in the documented JSON.

    The proof is checked against the signed root before it is handed out.
    """
    signer = platform.journal_signer()
    note = latest_checkpoint(platform, log_id)
    c = ckpt.verify_note(note, signer.verifier_key, origin=signer.origin(log_id))
    if not 0 <= index < c.size:
        raise JournalError(f"index {index} is not in log {log_id} (checkpoint size {c.size})")
    with read_connection(platform.engine) as conn:
        nodes = DbNodeStore(conn, log_id)
        proof, root = nodes.prefetched(
            lambda get: (inclusion_proof(index, c.size, get), root_at(c.size, get))
        )
        leaf = nodes.get(0, index)
        if root != c.root_hash or not verify_inclusion(leaf, index, c.size, proof, c.root_hash):
            raise JournalError(f"log {log_id} does not match its checkpoint: run `journal verify`")
    return {
        "type": "inclusion",
        "log_id": log_id,
        "index": index,
        "tree_size": c.size,
        "leaf_hash": leaf.hex(),
        "hashes": [h.hex() for h in proof],
        "checkpoint": note,
        "verifier_key": signer.verifier_key,
    }


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def sequencer_task(platform: Platform) -> PeriodicTask:
    """Integrates pending entries every ``journal.integrate_interval_seconds``.

    Every server process (HTTP worker, DIMSE or MLLP listener) runs one; the log's row lock
    makes concurrent runs safe. A last run at a clean shutdown leaves nothing pending.
    """
    return PeriodicTask(
        "journal-sequencer",
        platform.settings.journal.integrate_interval_seconds,
        lambda: integrate(platform),
        final_run=True,
    )
