"""Crypto primitives against the bare primitive they wrap.

Run: ``uv run python bench/crypto.py [--seconds 1.5]``

AEAD: ``DataKeys.seal``/``open`` (and the zero-copy ``seal_into``/``open_into``) against a
bare ``AESGCM.encrypt``/``decrypt`` on the same plaintext, same key size and same AAD length.
The bare baseline is the cheapest correct use of the primitive: ``encrypt`` draws a fresh
``os.urandom(12)`` nonce per call (any correct caller must), ``decrypt`` opens a ready
ciphertext with a ready AAD. What the wrapper adds on top: header and nonce framing, the
authenticated header, the key-version lookup, zero-copy slicing and error mapping. The
``SealContext`` is built once (its construction cost is printed separately). Goal: ratio
>= 0.8.

Blind index: tokens per second of ``BlindIndex.token`` / ``tokens`` against a one-shot
``hmac.digest`` per token (what the HMAC-state ``copy()`` trick saves).

Each function runs in interleaved rounds (so background load hits all of them alike) for
about ``--seconds`` in total; the best round is reported.
"""

from __future__ import annotations

import argparse
import hmac
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial

import cryptography
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hdsvault.crypto.aead import OVERHEAD, DataKeys, SealContext
from hdsvault.crypto.blind_index import BlindIndex

try:  # python bench/crypto.py puts bench/ on sys.path; python -m bench.crypto puts the root
    from _table import print_table
except ImportError:  # pragma: no cover - depends on how the bench is started
    from bench._table import print_table  # type: ignore[no-redef]

SIZES = (("1 KiB", 1 << 10), ("64 KiB", 1 << 16), ("1 MiB", 1 << 20))
ROUNDS = 10
GOAL = 0.8
CTX = SealContext("750712184", "resource/Patient", "0f8fad5b-d9cb-469f-a165-70867728950e", 3)


def best_rates(fns: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Calls per second of each function: best of ROUNDS interleaved rounds."""
    per_round = seconds / ROUNDS
    iterations: dict[str, int] = {}
    for name, fn in fns.items():  # calibrate: ~per_round seconds per round
        n, elapsed = 1, 0.0
        while elapsed < per_round / 4:
            n *= 2
            start = time.perf_counter()
            for _ in range(n):
                fn()
            elapsed = time.perf_counter() - start
        iterations[name] = max(1, int(n * per_round / elapsed))
    best = dict.fromkeys(fns, 0.0)
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            n = iterations[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = max(best[name], n / (time.perf_counter() - start))
    return best


def bench_aead(seconds: float) -> None:
    key = os.urandom(32)
    keys = DataKeys({1: key}, 1)
    bare = AESGCM(key)
    aad = b"\x01\x00\x00\x00\x01" + CTX.aad()  # same length as the wrapper's AAD
    rows: list[list[object]] = []
    for label, size in SIZES:
        plaintext = os.urandom(size)
        nonce = os.urandom(12)
        bare_ct = bare.encrypt(nonce, plaintext, aad)
        blob = keys.seal(plaintext, CTX)
        assert keys.open(blob, CTX) == plaintext
        sealed_buf = bytearray(size + OVERHEAD)
        plain_buf = bytearray(size)

        def bare_encrypt(pt: bytes = plaintext) -> bytes:
            return bare.encrypt(os.urandom(12), pt, aad)  # a fresh nonce, as any caller needs

        fns: dict[str, Callable[[], object]] = {
            "bare encrypt": bare_encrypt,
            "seal": partial(keys.seal, plaintext, CTX),
            "seal_into": partial(keys.seal_into, plaintext, CTX, sealed_buf),
            "bare decrypt": partial(bare.decrypt, nonce, bare_ct, aad),
            "open": partial(keys.open, blob, CTX),
            "open_into": partial(keys.open_into, blob, CTX, plain_buf),
        }
        rate = best_rates(fns, seconds)
        mbps = {name: r * size / 1e6 for name, r in rate.items()}
        for op, base in (
            ("seal", "bare encrypt"),
            ("seal_into", "bare encrypt"),
            ("open", "bare decrypt"),
            ("open_into", "bare decrypt"),
        ):
            ratio = mbps[op] / mbps[base]
            rows.append(
                [
                    f"DataKeys.{op}",
                    label,
                    mbps[base],
                    mbps[op],
                    ratio,
                    "yes" if ratio >= GOAL else "NO",
                ]
            )
    print_table(
        "Envelope AEAD (AES-256-GCM) vs bare AESGCM on the same buffers",
        ["operation", "size", "bare MB/s", "hdsvault MB/s", "ratio", f">= {GOAL}"],
        rows,
        caption="seal/open return new bytes; seal_into/open_into write into a reused buffer",
    )
    ctx_rate = best_rates(
        {"ctx": lambda: SealContext("750712184", "resource/Patient", "0f8fad5b", 3)}, seconds
    )["ctx"]
    print(f"SealContext construction (AAD encoding included): {1e6 / ctx_rate:.2f} us\n")


def bench_blind_index(seconds: float) -> None:
    root = os.urandom(32)
    index = BlindIndex(root, "750712184")
    bare_key = os.urandom(32)
    values = [f"Dupont-{i}" for i in range(1000)]
    field = b"\x00\x00\x00\x06family"
    fns: dict[str, Callable[[], object]] = {
        "bare hmac.digest (one-shot)": lambda: [
            hmac.digest(bare_key, field + v.encode(), "sha256")[:16] for v in values
        ],
        "BlindIndex.token": lambda: [index.token("family", v) for v in values],
        "BlindIndex.tokens (batch)": lambda: index.tokens("family", values),
    }
    rate = best_rates(fns, seconds)
    base = rate["bare hmac.digest (one-shot)"] * len(values)
    rows: list[list[object]] = []
    for name, r in rate.items():
        per_sec = r * len(values)
        rows.append([name, per_sec, 1e6 / per_sec, per_sec / base])
    print_table(
        "Blind index tokens (HMAC-SHA256 truncated to 128 bits), 1000 values per call",
        ["method", "tokens/s", "us/token", "vs one-shot"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measured function")
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()} | cryptography {cryptography.__version__} | "
        f"{openssl_backend.openssl_version_text()} | {platform.machine()} | "
        f"{os.cpu_count()} CPUs | {platform.platform()}\n",
        file=sys.stdout,
    )
    bench_aead(args.seconds)
    bench_blind_index(args.seconds)


if __name__ == "__main__":
    main()
