"""The perimeter's rate limits and login back-off, shared by the HTTP worker processes.

Why: with ``[server] workers = N`` each worker process would otherwise keep its own token
buckets and failure counts, and a client whose connections land on different workers would
get up to N times the configured rate and N times the allowed failed logins before its
back-off. Here the state lives in one shared memory file (``memfd``) that the parent process
creates and every worker maps, so the limits hold for the whole server as configured.

Layout: a 64-byte header (the first 16 bytes: a random key for the slot hash, made by the
parent), then three tables (per-address buckets, per-identity buckets, login failures) of
``slots + PROBES`` slots of 32 bytes: ``key`` (u64, 0 = free) and three float64 fields
(buckets: tokens, last update; logins: failures, first failure, blocked until). A key lives in
one of the :data:`PROBES` slots from ``hash(key) % slots``; when all are taken, the least
recently used one is reused (a bucket that restarts full, as the in-process tables do when
they shed keys). Each operation holds a POSIX record lock (``fcntl.lockf``) on its probe
window: exact across processes. Within a process the state is only used from the event
loop's thread (POSIX record locks do not exclude threads of one process). Times are
``time.monotonic()``: one clock for every process of the machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import secrets
import struct
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

SLOT = 32
PROBES = 8
HEADER = 64
SLOTS = 65_536
"""Slots per table (2 MiB each): distinct keys held before the least recently used go."""

_ENTRY = struct.Struct("<Qddd")
_ADDRESS, _IDENTITY, _LOGINS = 0, 1, 2


def _stable(key: Hashable) -> bytes:
    return repr(key).encode()


class SharedLimits:
    """The shared memory: :meth:`create` in the parent, :meth:`attach` in each worker."""

    def __init__(self, fd: int, slots: int) -> None:
        self.fd, self.slots = fd, slots
        self._table = (slots + PROBES) * SLOT
        self._map = mmap.mmap(fd, HEADER + 3 * self._table)
        self._hash_key = bytes(self._map[:16])

    @classmethod
    def create(cls, slots: int = SLOTS) -> SharedLimits:
        fd = os.memfd_create("hdsvault-limits", os.MFD_CLOEXEC)
        os.ftruncate(fd, HEADER + 3 * (slots + PROBES) * SLOT)  # zeroed: every slot free
        os.pwrite(fd, secrets.token_bytes(16) + struct.pack("<Q", slots), 0)
        return cls(fd, slots)

    @classmethod
    def attach(cls, fd: int) -> SharedLimits:
        (slots,) = struct.unpack("<Q", os.pread(fd, 8, 16))
        return cls(fd, slots)

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()
            os.close(self.fd)

    def address_buckets(self, rate: float, burst: int) -> SharedTokenBuckets:
        return SharedTokenBuckets(self, _ADDRESS, rate, burst)

    def identity_buckets(self, rate: float, burst: int) -> SharedTokenBuckets:
        return SharedTokenBuckets(self, _IDENTITY, rate, burst)

    def logins(self, allowed: int, base: float, cap: float, window: float) -> SharedLoginThrottle:
        return SharedLoginThrottle(self, allowed, base, cap, window)

    # -- slots --------------------------------------------------------------------------------

    def _hash(self, key: Hashable) -> int:
        digest = hashlib.blake2b(_stable(key), digest_size=8, key=self._hash_key).digest()
        return int.from_bytes(digest, "little") or 1  # 0 marks a free slot

    @contextmanager
    def window(self, table: int, key: Hashable) -> Iterator[tuple[int, list[int]]]:
        """(the key's hash, the offsets of its probe window), under the window's lock."""
        h = self._hash(key)
        start = HEADER + table * self._table + (h % self.slots) * SLOT
        fcntl.lockf(self.fd, fcntl.LOCK_EX, PROBES * SLOT, start)
        try:
            yield h, [start + i * SLOT for i in range(PROBES)]
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, PROBES * SLOT, start)

    def read(self, offset: int) -> tuple[int, float, float, float]:
        entry: tuple[int, float, float, float] = _ENTRY.unpack_from(self._map, offset)
        return entry

    def write(self, offset: int, key: int, a: float, b: float, c: float) -> None:
        _ENTRY.pack_into(self._map, offset, key, a, b, c)

    def find(self, h: int, offsets: list[int], age: int) -> tuple[int, bool]:
        """The slot of ``h`` (and True), else a free slot, else the one least recently used
        (field ``age`` is its last use), and False."""
        free = oldest = -1
        oldest_time = float("inf")
        for offset in offsets:
            entry = self.read(offset)
            if entry[0] == h:
                return offset, True
            if entry[0] == 0:
                if free < 0:
                    free = offset
            elif entry[age] < oldest_time:
                oldest, oldest_time = offset, entry[age]
        return (free if free >= 0 else oldest), False


class SharedTokenBuckets:
    """:class:`hdsvault.api.perimeter.TokenBuckets`, in the shared memory."""

    def __init__(self, limits: SharedLimits, table: int, rate: float, burst: int) -> None:
        self.limits, self.table = limits, table
        self.rate, self.burst = rate, float(burst)

    def take(self, key: Hashable, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        limits = self.limits
        with limits.window(self.table, key) as (h, offsets):
            offset, found = limits.find(h, offsets, age=2)
            if not found:
                limits.write(offset, h, self.burst - 1.0, now, 0.0)
                return 0.0
            _, tokens, last, _ = limits.read(offset)
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                limits.write(offset, h, tokens - 1.0, now, 0.0)
                return 0.0
            limits.write(offset, h, tokens, now, 0.0)
            return (1.0 - tokens) / self.rate


class SharedLoginThrottle:
    """:class:`hdsvault.api.perimeter.LoginThrottle`, in the shared memory."""

    def __init__(
        self, limits: SharedLimits, allowed: int, base: float, cap: float, window: float
    ) -> None:
        self.limits = limits
        self.allowed, self.base, self.cap, self.window = allowed, base, cap, window

    def wait(self, address: str, now: float) -> float:
        limits = self.limits
        with limits.window(_LOGINS, address) as (h, offsets):
            offset, found = limits.find(h, offsets, age=2)
            if not found:
                return 0.0
            _, _, first, until = limits.read(offset)
            if now - first > self.window and now >= until:
                limits.write(offset, 0, 0.0, 0.0, 0.0)
                return 0.0
            return max(0.0, until - now)

    def failed(self, address: str, now: float) -> None:
        limits = self.limits
        with limits.window(_LOGINS, address) as (h, offsets):
            offset, found = limits.find(h, offsets, age=2)
            count, first, until = 0.0, now, 0.0
            if found:
                _, count, first, until = limits.read(offset)
                if now - first > self.window:
                    count, first, until = 0.0, now, 0.0
            count += 1
            over = count - self.allowed
            if over >= 0:
                until = now + min(self.cap, self.base * 2.0 ** min(over, 30))
            limits.write(offset, h, count, first, until)

    def succeeded(self, address: str) -> None:
        limits = self.limits
        with limits.window(_LOGINS, address) as (h, offsets):
            offset, found = limits.find(h, offsets, age=2)
            if found:
                limits.write(offset, 0, 0.0, 0.0, 0.0)
