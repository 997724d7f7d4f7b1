"""Tamper-evident journal: what happened, provably and in order.

``merkle`` holds the RFC 9162 tree hashing and proofs, ``checkpoint`` the signed
tree heads (C2SP signed-note / tlog-checkpoint). Both are pure: no database, no I/O,
so a third party can re-implement and check them from ``docs/journal.md`` alone.
"""
