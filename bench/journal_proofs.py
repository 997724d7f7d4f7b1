"""Benchmark: journal Merkle tree at 1,000,000 entries (not a test; run by hand).

    uv run python bench/journal_proofs.py [--entries N] [--entry-size BYTES] [--samples K]

Measures what the journal does on the hot path and what an auditor does:
- hashing throughput (MB/s) of leaf hashing and of leaf hashing + tree building, compared
  with raw ``hashlib.sha256`` over the same bytes (one stream, and one call per entry);
- root computation at 1M leaves (streaming compact range, and from stored level nodes);
- inclusion and consistency proof generation and verification, p50 / p99 (target < 5 ms).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

from hdsvault.journal.merkle import (
    CompactRange,
    MerkleTree,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def percentiles(samples_ns: list[int]) -> tuple[float, float, float]:
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2] / 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6
    return p50, p99, ordered[-1] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--entry-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    n, size = args.entries, args.entry_size
    rng = random.Random(1)
    total_start = time.perf_counter()

    print(f"# journal Merkle benchmark: {n:,} entries of {size} bytes")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}"
    )

    blob = os.urandom(n * size)
    view = memoryview(blob)
    entries = [view[i * size : (i + 1) * size] for i in range(n)]
    megabytes = len(blob) / 1e6

    sha = hashlib.sha256
    t_stream, _ = timed(lambda: sha(blob).digest())
    t_raw, _ = timed(lambda: [sha(e).digest() for e in entries])
    t_leaf, leaves = timed(lambda: [leaf_hash(e) for e in entries])
    assert isinstance(leaves, list)
    t_root, root = timed(lambda: root_from_leaf_hashes(leaves))
    t_levels, tree = timed(lambda: MerkleTree(leaves))
    assert isinstance(tree, MerkleTree)

    def stream() -> bytes:
        state = CompactRange()
        state.extend(leaf_hash(e) for e in entries)
        return state.root()

    t_stream_all, stream_root = timed(stream)
    t_tree_root, tree_root = timed(tree.root)
    assert root == tree_root == stream_root

    print()
    print("## hashing throughput over the same bytes")
    print()
    print("| work | seconds | MB/s | vs sha256 stream | vs sha256 per entry |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = [
        ("hashlib.sha256, one stream", t_stream),
        ("hashlib.sha256, one call per entry", t_raw),
        ("leaf_hash per entry", t_leaf),
        ("leaf_hash + root (CompactRange, streaming)", t_stream_all),
        ("leaf_hash + root_from_leaf_hashes", t_leaf + t_root),
        ("leaf_hash + MerkleTree build (all level nodes)", t_leaf + t_levels),
    ]
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.3f} | {megabytes / seconds:,.0f} "
            f"| {t_stream / seconds:.2f}x | {t_raw / seconds:.2f}x |"
        )

    print()
    print(f"## tree of {n:,} leaves")
    print()
    print("| operation | time |")
    print("| --- | ---: |")
    print(f"| root_from_leaf_hashes (1 pass, O(log n) memory) | {t_root * 1e3:,.0f} ms |")
    print(f"| MerkleTree build from leaf hashes (level nodes) | {t_levels * 1e3:,.0f} ms |")
    print(f"| MerkleTree.root() at full size (from level nodes) | {t_tree_root * 1e3:.3f} ms |")

    k = args.samples
    incl_gen, incl_ver, cons_gen, cons_ver, root_at = [], [], [], [], []
    clock = time.perf_counter_ns
    for _ in range(k):
        tree_size = rng.randrange(n // 2, n + 1) if rng.random() < 0.5 else n
        index = rng.randrange(tree_size)
        t0 = clock()
        proof = tree.inclusion_proof(index, tree_size)
        t1 = clock()
        tree_root_at = tree.root(tree_size)
        t2 = clock()
        ok = verify_inclusion(leaves[index], index, tree_size, proof, tree_root_at)
        t3 = clock()
        assert ok
        incl_gen.append(t1 - t0)
        root_at.append(t2 - t1)
        incl_ver.append(t3 - t2)

        new = rng.randrange(2, n + 1)
        old = rng.randrange(1, new)
        old_root, new_root = tree.root(old), tree.root(new)
        t0 = clock()
        cproof = tree.consistency_proof(old, new)
        t1 = clock()
        ok = verify_consistency(old, new, cproof, old_root, new_root)
        t2 = clock()
        assert ok
        cons_gen.append(t1 - t0)
        cons_ver.append(t2 - t1)

    print()
    print(f"## proofs at up to {n:,} leaves ({k:,} random samples each)")
    print()
    print("| operation | p50 ms | p99 ms | max ms | under 5 ms at p99 |")
    print("| --- | ---: | ---: | ---: | :---: |")
    for name, samples in [
        ("inclusion proof generation", incl_gen),
        ("root at a past size", root_at),
        ("inclusion proof verification", incl_ver),
        ("consistency proof generation", cons_gen),
        ("consistency proof verification", cons_ver),
    ]:
        p50, p99, worst = percentiles(samples)
        print(f"| {name} | {p50:.4f} | {p99:.4f} | {worst:.4f} | {'yes' if p99 < 5 else 'NO'} |")
    mean_len = statistics.mean(len(tree.inclusion_proof(rng.randrange(n))) for _ in range(100))
    print()
    print(f"mean inclusion proof length: {mean_len:.1f} hashes")
    print(f"total benchmark time: {time.perf_counter() - total_start:.1f} s")


if __name__ == "__main__":
    main()
