"""The perimeter's state shared by HTTP worker processes (``api/shared_limits.py``): the same
answers as the in-process tables, exact across processes, bounded. Real shared memory, real
processes."""

from __future__ import annotations

import random
import subprocess
import sys

from hdsvault.api.perimeter import LoginThrottle, TokenBuckets
from hdsvault.api.shared_limits import SharedLimits


def test_buckets_answer_as_the_in_process_ones() -> None:
    rng = random.Random(7)
    limits = SharedLimits.create(slots=1024)
    try:
        shared = limits.address_buckets(rate=2.0, burst=5)
        local = TokenBuckets(rate=2.0, burst=5)
        now = 1000.0
        for _ in range(3000):
            now += rng.choice((0.0, 0.01, 0.1, 0.7))
            key = rng.choice(("10.0.0.1", "10.0.0.2", ("credential", b"x" * 16)))
            assert shared.take(key, now) == local.take(key, now)
    finally:
        limits.close()


def test_login_back_off_answers_as_the_in_process_one() -> None:
    rng = random.Random(11)
    limits = SharedLimits.create(slots=1024)
    try:
        shared = limits.logins(allowed=3, base=1.0, cap=60.0, window=30.0)
        local = LoginThrottle(3, 1.0, 60.0, 30.0)
        now = 50.0
        for _ in range(3000):
            now += rng.choice((0.0, 0.2, 1.5, 40.0))
            address = rng.choice(("10.0.0.1", "10.0.0.2"))
            action = rng.random()
            if action < 0.6:
                shared.failed(address, now)
                local.failed(address, now)
            elif action < 0.7:
                shared.succeeded(address)
                local.succeeded(address)
            assert shared.wait(address, now) == local.wait(address, now)
    finally:
        limits.close()


TAKER = """
import sys
from hdsvault.api.shared_limits import SharedLimits
limits = SharedLimits.attach(int(sys.argv[1]))
buckets = limits.address_buckets(rate=1e-9, burst=50)
sys.stdin.readline()  # start together
print(sum(buckets.take("10.9.9.9", 500.0) == 0.0 for _ in range(400)))
"""


def test_a_bucket_is_exact_across_processes() -> None:
    """Four processes take from one address's bucket at once: exactly its burst is granted
    (each process with its own table would grant four bursts)."""
    limits = SharedLimits.create()
    try:
        takers = [
            subprocess.Popen(
                [sys.executable, "-c", TAKER, str(limits.fd)],
                pass_fds=[limits.fd],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        for taker in takers:
            assert taker.stdin is not None
            taker.stdin.write("go\n")
            taker.stdin.flush()
        granted = [int(taker.communicate(timeout=60)[0]) for taker in takers]
        assert sum(granted) == 50, granted
    finally:
        limits.close()


def test_the_tables_stay_bounded_and_forget_the_least_recently_used() -> None:
    limits = SharedLimits.create(slots=16)
    try:
        buckets = limits.address_buckets(rate=1e-9, burst=1)
        assert buckets.take("first", 1.0) == 0.0
        assert buckets.take("first", 1.5) > 0  # its one token is spent
        for i in range(2000):  # far more addresses than slots
            assert buckets.take(f"10.1.{i // 250}.{i % 250}", 2.0 + i) == 0.0
        # "first" was the least recently used of its window: forgotten, a new full bucket
        assert buckets.take("first", 5000.0) == 0.0
    finally:
        limits.close()
