"""``journal verify``: recompute every log from its entries and check it against what was signed.

For each log, entries are streamed in sequence order and, for each index:

- a missing index (deleted entry, or a truncated tail) is named;
- the leaf hash is recomputed from the entry's fields and compared with the stored one
  (an edited or swapped entry: the leaf binds the entry to its index);
- the leaf MAC is checked (entries, leaf hashes and tree rewritten together by someone without
  the KEK: the MAC names the forged index);
- the root at every signed checkpoint size is compared with the checkpoint, whose signature is
  checked (a forged log cannot produce a checkpoint consistent with an earlier one).

An external checkpoint (kept by a witness, on WORM media or on paper) is checked the same way.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from sqlalchemy import Connection, func, select

from hdsvault.db.schema import journal_checkpoints, journal_entries, journal_logs
from hdsvault.journal import checkpoint as ckpt
from hdsvault.journal.entry import PLATFORM_LOG
from hdsvault.journal.merkle import CompactRange, leaf_hash
from hdsvault.journal.signer import JournalSigner
from hdsvault.journal.store import canonical_row_bytes, stream_sequenced


@dataclass(frozen=True)
class Problem:
    log_id: str
    index: int | None
    kind: str
    message: str


@dataclass
class LogReport:
    log_id: str
    entries: int = 0
    bytes_hashed: int = 0
    checkpoints: int = 0
    pending: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def first_bad_index(self) -> int | None:
        indices = [p.index for p in self.problems if p.index is not None]
        return min(indices) if indices else None


@dataclass
class VerifyReport:
    logs: list[LogReport]

    @property
    def ok(self) -> bool:
        return not any(log.problems for log in self.logs)

    @property
    def problems(self) -> list[Problem]:
        return [p for log in self.logs for p in log.problems]


def verify_log(
    conn: Connection,
    signer: JournalSigner,
    log_id: str,
    *,
    external: ckpt.Checkpoint | None = None,
    progress: Callable[[int], None] | None = None,
) -> LogReport:
    report = LogReport(log_id)
    problems = report.problems

    def problem(index: int | None, kind: str, message: str) -> None:
        problems.append(Problem(log_id, index, kind, message))

    signed: dict[int, bytes] = {}
    for row in conn.execute(
        select(journal_checkpoints).where(journal_checkpoints.c.log_id == log_id)
    ):
        report.checkpoints += 1
        try:
            c = ckpt.verify_note(row.note, signer.verifier_key, origin=signer.origin(log_id))
        except ckpt.CheckpointError as exc:
            problem(None, "checkpoint-signature", f"checkpoint at size {row.size}: {exc}")
            continue
        if c.size != row.size or c.root_hash != bytes(row.root_hash):
            problem(
                None,
                "checkpoint-altered",
                f"checkpoint row at size {row.size} differs from its signed note",
            )
        signed[c.size] = c.root_hash
    # size -> [(who vouched for it, root)]: the log's own checkpoints, and a witness's.
    expected_roots: dict[int, list[tuple[str, bytes]]] = {}
    for size, root in signed.items():
        expected_roots.setdefault(size, []).append(("the signed checkpoint", root))
    if external is not None:
        if external.origin != signer.origin(log_id):
            problem(None, "external-origin", f"external checkpoint is for {external.origin!r}")
        else:
            expected_roots.setdefault(external.size, []).append(
                ("the external checkpoint", external.root_hash)
            )

    pruned_allowed = _recorded_prune_limit(conn, log_id)
    tree = CompactRange()
    expected = 0
    for row in stream_sequenced(conn, log_id):
        seq = row.seq
        if seq != expected:
            problem(expected, "missing", f"entries {expected}..{seq - 1} are missing")
            expected = seq
            tree = None  # type: ignore[assignment]  # the tree can no longer be recomputed
        if row.pruned and row.leaf_hash is not None:
            # Content removed by retention: the stored leaf hash stands in, its MAC checked,
            # and a journaled prune must cover it (else someone erased it early).
            h = bytes(row.leaf_hash)
            if seq >= pruned_allowed:
                problem(seq, "pruned-unrecorded", f"entry {seq} emptied without a journaled prune")
        else:
            data = canonical_row_bytes(row, seq)
            report.bytes_hashed += len(data)
            h = leaf_hash(data)
        if row.leaf_hash is None or bytes(row.leaf_hash) != h:
            problem(seq, "altered", f"entry {seq} does not match its leaf hash (edited or moved)")
        elif row.mac is None or not hmac.compare_digest(
            bytes(row.mac), signer.leaf_mac(log_id, seq, h)
        ):
            problem(seq, "forged", f"entry {seq} has no valid MAC (rewritten without the key)")
        if tree is not None:
            tree.append(h)
            for source, root in expected_roots.pop(tree.size, ()):
                if root != tree.root():
                    problem(seq, "root-mismatch", f"tree at size {tree.size} differs from {source}")
        expected += 1
        report.entries += 1
        if progress and report.entries % 10_000 == 0:
            progress(report.entries)
    if expected_roots:
        largest = max(expected_roots)
        if largest > expected:
            problem(
                expected,
                "truncated",
                f"entries {expected}..{largest - 1} are missing (signed size {largest})",
            )
        elif tree is None:
            problem(None, "unverifiable", "roots after a gap cannot be recomputed")
    claimed = conn.execute(
        select(journal_logs.c.size).where(journal_logs.c.log_id == log_id)
    ).scalar_one_or_none()
    if claimed is not None and claimed != expected and not problems:
        problem(
            min(claimed, expected),
            "size-mismatch",
            f"log claims {claimed} entries, {expected} found",
        )
    report.pending = conn.execute(
        select(func.count()).where(
            journal_entries.c.log_id == log_id, journal_entries.c.seq.is_(None)
        )
    ).scalar_one()
    problems.sort(key=lambda p: (p.index is None, p.index or 0))
    return report


def all_log_ids(conn: Connection) -> list[str]:
    ids = set(conn.execute(select(journal_logs.c.log_id)).scalars())
    ids |= set(conn.execute(select(journal_checkpoints.c.log_id).distinct()).scalars())
    ids |= set(conn.execute(select(journal_entries.c.log_id).distinct()).scalars())
    return sorted(ids)


def _recorded_prune_limit(conn: Connection, log_id: str) -> int:
    """Up to which index the platform journal says ``log_id`` was pruned (0: never)."""
    limit = 0
    rows = conn.execute(
        select(journal_entries.c.objects).where(
            journal_entries.c.log_id == PLATFORM_LOG,
            journal_entries.c.event_type == "journal.prune",
            journal_entries.c.seq.is_not(None),
        )
    )
    for (objects,) in rows:
        refs = orjson.loads(objects)
        if f"JournalLog/{log_id}" in refs:
            for ref in refs:
                if ref.startswith("PrunedBefore/"):
                    limit = max(limit, int(ref.removeprefix("PrunedBefore/")))
    return limit
