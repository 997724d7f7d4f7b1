"""``journal verify``: recompute every log from its entries and check it against what was signed.

For each log, entries are streamed in sequence order, in large batches of plain rows, and:

- a missing index (deleted entry, or a truncated tail) is named;
- every entry's leaf bytes are rebuilt from its stored fields, hashed, and compared with the
  stored leaf hash (an edited or swapped entry: the leaf binds the entry to its index);
- the recomputed tree's root at every signed checkpoint size is compared with the checkpoint,
  whose signature is checked (a forged log cannot produce a checkpoint consistent with an
  earlier one);
- leaf MACs are checked where no matching signed root vouches for the leaf: the tail after
  the last checkpoint, and every leaf from the first checkpoint whose root does not match
  (entries, leaf hashes and tree rewritten together by someone without the KEK: the MAC
  names the forged index). Below a matching root the signature already authenticates every
  leaf hash, with the same key custody as the MAC key, so a MAC there would add nothing.

An external checkpoint (kept by a witness, on WORM media or on paper) is checked the same way.

Speed: a clean batch costs one list comparison for its indices, one for its leaf hashes and
a tight hashing loop; only a batch with a problem goes through the per-entry path that names
it. Leaf bytes are built from the row with :func:`hdsvault.journal.store.leaf_bytes`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, Row, func, select

from hdsvault.db.engine import marker
from hdsvault.db.schema import journal_checkpoints, journal_entries, journal_logs
from hdsvault.journal import checkpoint as ckpt
from hdsvault.journal import leafwalk
from hdsvault.journal.entry import PLATFORM_LOG
from hdsvault.journal.merkle import CompactRange
from hdsvault.journal.signer import JournalSigner
from hdsvault.journal.store import LEAF_KEYS, LEAF_SELECT, leaf_bytes, time_text


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
    compiled_entries: int = 0
    """Entries confirmed by the compiled walk (:mod:`hdsvault.journal.leafwalk`)."""
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
    walk = _Walk(conn, signer, report, _expected_roots(conn, signer, report, external))
    compiled_end = 0
    read = leafwalk.reader(conn, log_id)
    if read is not None:
        # Up to the largest signed size, the compiled walk; the tail (whose MACs need every
        # leaf hash) and any range it does not find clean go through the Python walk below.
        compiled_end = walk.signed_end
        for walked in leafwalk.walk_ranges(read, compiled_end, sorted(walk.roots)):
            if not walk.walked(walked):
                _walk_rows(conn, walk, walked.start, walked.end)
            if progress:
                progress(report.entries)
    _walk_rows(conn, walk, compiled_end, None, progress)
    walk.finish()
    report.pending = conn.execute(
        select(func.count()).where(
            journal_entries.c.log_id == log_id, journal_entries.c.seq.is_(None)
        )
    ).scalar_one()
    report.problems.sort(key=lambda p: (p.index is None, p.index or 0))
    return report


def _walk_rows(
    conn: Connection,
    walk: _Walk,
    lo: int,
    hi: int | None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """The Python walk over entries ``lo <= seq < hi`` (no upper bound if ``hi`` is None)."""
    m = marker(conn)
    sql = (
        f"SELECT {LEAF_SELECT}, seq, leaf_hash, mac, pruned FROM journal_entries "  # noqa: S608
        f"WHERE log_id = {m} AND seq >= {m}{'' if hi is None else f' AND seq < {m}'} "
        f"ORDER BY seq LIMIT {_BATCH}"
    )
    while True:
        bounds = (walk.log_id, lo) if hi is None else (walk.log_id, lo, hi)
        rows = conn.exec_driver_sql(sql, bounds).all()
        if rows:
            walk.batch(rows)
            lo = rows[-1][_SEQ_AT] + 1
            if progress:
                progress(walk.report.entries)
        if len(rows) < _BATCH:
            break


_BATCH = 20_000
_SEQ_AT, _HASH_AT, _MAC_AT, _PRUNED_AT = range(len(LEAF_KEYS), len(LEAF_KEYS) + 4)
_LEAF_PREFIX = b"\x00"
_sha256 = hashlib.sha256

Roots = dict[int, list[tuple[str, bytes]]]
"""Tree size -> [(who vouched for it, root)]: the log's own checkpoints, and a witness's."""


def _expected_roots(
    conn: Connection, signer: JournalSigner, report: LogReport, external: ckpt.Checkpoint | None
) -> Roots:
    """Every root the log must have, from checkpoints whose signature checks."""
    log_id = report.log_id
    roots: Roots = {}
    for row in conn.execute(
        select(journal_checkpoints).where(journal_checkpoints.c.log_id == log_id)
    ):
        report.checkpoints += 1
        try:
            c = ckpt.verify_note(row.note, signer.verifier_key, origin=signer.origin(log_id))
        except ckpt.CheckpointError as exc:
            _problem(report, None, "checkpoint-signature", f"checkpoint at size {row.size}: {exc}")
            continue
        if c.size != row.size or c.root_hash != bytes(row.root_hash):
            _problem(
                report,
                None,
                "checkpoint-altered",
                f"checkpoint row at size {row.size} differs from its signed note",
            )
        roots.setdefault(c.size, []).append(("the signed checkpoint", c.root_hash))
    if external is not None:
        if external.origin != signer.origin(log_id):
            _problem(
                report, None, "external-origin", f"external checkpoint is for {external.origin!r}"
            )
        else:
            roots.setdefault(external.size, []).append(
                ("the external checkpoint", external.root_hash)
            )
    return roots


def _problem(report: LogReport, index: int | None, kind: str, message: str) -> None:
    report.problems.append(Problem(report.log_id, index, kind, message))


class _Walk:
    """The state of one pass over a log: next index, compact range, what the MACs must cover.

    ``vouched`` is the size up to which every leaf is authenticated by matching signed roots;
    it stops growing (``trusting`` turns false) at the first root that does not match or when
    a gap makes the tree impossible to recompute. Leaves from ``vouched`` on have their MACs
    checked: inline past the last signed size, by a second pass (:meth:`finish`) below it.
    """

    def __init__(self, conn: Connection, signer: JournalSigner, report: LogReport, roots: Roots):
        self.conn = conn
        self.signer = signer
        self.report = report
        self.log_id = report.log_id
        self.roots = roots
        self.signed_end = max(roots, default=0)
        self.tree: CompactRange | None = CompactRange()
        self.expected = 0
        self.vouched = 0
        self.trusting = True
        self.altered: set[int] = set()
        self.pruned_allowed = _recorded_prune_limit(conn, self.log_id)
        self.spell = time_text(conn)

    def batch(self, rows: Sequence[Row[Any]]) -> None:
        start = self.expected
        contiguous = [r[_SEQ_AT] for r in rows] == list(range(start, start + len(rows)))
        if not contiguous or any(r[_PRUNED_AT] for r in rows):
            self._slow(rows)
            return
        spell = self.spell
        try:
            data = [leaf_bytes(r, seq, spell) for seq, r in enumerate(rows, start)]
        except (TypeError, ValueError):  # a column no recorded entry can hold
            self._slow(rows)
            return
        hashes = [_sha256(_LEAF_PREFIX + d).digest() for d in data]
        if hashes != [r[_HASH_AT] for r in rows]:
            self._slow(rows)
            return
        self.report.bytes_hashed += sum(map(len, data))
        self._check_tail_macs(rows, hashes, start)
        self._grow(hashes, start)
        self.expected = start + len(rows)
        self.report.entries += len(rows)

    def _slow(self, rows: Sequence[Row[Any]]) -> None:
        """Entry by entry, naming every problem (a gap, a pruned entry, a hash mismatch)."""
        for r in rows:
            seq = r[_SEQ_AT]
            if seq != self.expected:
                _problem(
                    self.report, self.expected, "missing",
                    f"entries {self.expected}..{seq - 1} are missing",
                )  # fmt: skip
                self.expected = seq
                self.tree = None  # the tree can no longer be recomputed
                self.trusting = False
            stored = r[_HASH_AT]
            if r[_PRUNED_AT] and stored is not None:
                # Content removed by retention: the stored leaf hash stands in, its MAC checked,
                # and a journaled prune must cover it (else someone erased it early).
                h = bytes(stored)
                if seq >= self.pruned_allowed:
                    _problem(
                        self.report, seq, "pruned-unrecorded",
                        f"entry {seq} emptied without a journaled prune",
                    )  # fmt: skip
            else:
                try:
                    data = leaf_bytes(r, seq, self.spell)
                except (TypeError, ValueError):  # e.g. objects edited into invalid JSON
                    data = b""  # hashes to no recorded leaf: reported as altered below
                self.report.bytes_hashed += len(data)
                h = _sha256(_LEAF_PREFIX + data).digest()
            if stored is None or bytes(stored) != h:
                self.altered.add(seq)
                _problem(
                    self.report, seq, "altered",
                    f"entry {seq} does not match its leaf hash (edited or moved)",
                )  # fmt: skip
            self._check_tail_macs([r], [h], seq)
            self._grow([h], seq)
            self.expected = seq + 1
            self.report.entries += 1

    def _check_tail_macs(self, rows: Sequence[Row[Any]], hashes: list[bytes], start: int) -> None:
        """MACs of the leaves no signed size covers (the others wait for :meth:`finish`)."""
        first = max(0, self.signed_end - start)
        for offset in range(first, len(rows)):
            seq = start + offset
            if seq not in self.altered:
                self._check_mac(seq, hashes[offset], rows[offset][_MAC_AT])

    def _check_mac(self, seq: int, leaf: bytes, mac: bytes | None) -> None:
        if mac is None or not hmac.compare_digest(
            bytes(mac), self.signer.leaf_mac(self.log_id, seq, leaf)
        ):
            _problem(
                self.report, seq, "forged",
                f"entry {seq} has no valid MAC (rewritten without the key)",
            )  # fmt: skip

    def _grow(self, hashes: list[bytes], start: int) -> None:
        """Append leaf hashes to the compact range, comparing the root at every signed size."""
        if self.tree is None:
            return
        end = start + len(hashes)
        at = start
        for size in sorted(s for s in self.roots if start < s <= end):
            self.tree.extend(hashes[at - start : size - start])
            at = size
            self._check_root(size, self.tree.root())
        self.tree.extend(hashes[at - start :])

    def _check_root(self, size: int, root: bytes) -> None:
        for source, expected in self.roots.pop(size):
            if expected != root:
                _problem(
                    self.report, size - 1, "root-mismatch",
                    f"tree at size {size} differs from {source}",
                )  # fmt: skip
                self.trusting = False
        if self.trusting:
            self.vouched = size

    def walked(self, walked: leafwalk.WalkedRange) -> bool:
        """Take a range the compiled walk found clean; False if the Python walk must redo it.

        Redone: a range that is not clean, one that does not start where the walk stands (a
        gap before it), one past the largest signed size (its leaves' MACs are checked one by
        one) and one with an entry pruned beyond what the platform journal records.
        """
        start, end = walked.start, walked.end
        if (
            not walked.clean
            or start != self.expected
            or end > self.signed_end
            or walked.pruned_max >= self.pruned_allowed
        ):
            return False
        if self.tree is not None:
            for size, nodes in sorted(walked.nodes_at.items()):
                if size in self.roots:
                    at_size = self.tree.copy()
                    at_size.extend_range(nodes, size - start)
                    self._check_root(size, at_size.root())
            self.tree.extend_range(walked.nodes, end - start)
        self.expected = end
        self.report.entries += walked.entries
        self.report.bytes_hashed += walked.bytes_hashed
        self.report.compiled_entries += walked.entries
        return True

    def finish(self) -> None:
        """Truncation and size checks, and the MACs no matching root vouched for."""
        report = self.report
        if self.roots:
            largest = max(self.roots)
            if largest > self.expected:
                _problem(
                    report, self.expected, "truncated",
                    f"entries {self.expected}..{largest - 1} are missing (signed size {largest})",
                )  # fmt: skip
            elif self.tree is None:
                _problem(report, None, "unverifiable", "roots after a gap cannot be recomputed")
        self._macs_between(self.vouched, self.signed_end)
        claimed = self.conn.execute(
            select(journal_logs.c.size).where(journal_logs.c.log_id == self.log_id)
        ).scalar_one_or_none()
        if claimed is not None and claimed != self.expected and not report.problems:
            _problem(
                report, min(claimed, self.expected), "size-mismatch",
                f"log claims {claimed} entries, {self.expected} found",
            )  # fmt: skip

    def _macs_between(self, lo: int, hi: int) -> None:
        """Check stored MACs over stored leaf hashes of ``[lo, hi)`` (skipping altered ones).

        The batches already compared those leaf hashes with the recomputed ones, so this
        second pass reads three small columns only.
        """
        if lo >= hi:
            return
        m = marker(self.conn)
        rows = self.conn.exec_driver_sql(
            "SELECT seq, leaf_hash, mac FROM journal_entries "  # noqa: S608 (markers only)
            f"WHERE log_id = {m} AND seq >= {m} AND seq < {m} ORDER BY seq",
            (self.log_id, lo, hi),
        )
        for seq, leaf, mac in rows:
            if seq not in self.altered and leaf is not None:
                self._check_mac(seq, bytes(leaf), mac)


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
