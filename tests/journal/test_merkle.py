"""RFC 9162 Merkle tree: known vectors, the RFC's worked example, and brute force.

Expected hashes come from the reference test vectors of transparency-dev/merkle (the Go
implementation behind Certificate Transparency), over the classic 8-leaf tree. The brute
force part compares every proof with a literal transcription of the RFC's recursive
definitions (MTH, PATH, SUBPROOF) and checks that every corruption is rejected.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from hdsvault.journal.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    TreeLevels,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

# --------------------------------------------------------------- reference vectors

# The 8 leaves of the CT reference tree (transparency-dev/merkle proof/verify_test.go).
LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]

# MTH(D[0:size]) for size = 1..8.
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

# (0-based leaf index, tree size, proof); the Go file lists 1-based leaf numbers.
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def h(hex_digest: str) -> bytes:
    return bytes.fromhex(hex_digest)


@pytest.fixture(scope="module")
def ref_tree() -> MerkleTree:
    return MerkleTree(leaf_hash(d) for d in LEAVES)


# ------------------------------------------------------- literal RFC transcription


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes, recursively, as written."""
    if not hashes:
        return _sha(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = _k(len(hashes))
    return _sha(b"\x01" + ref_mth(hashes[:k]) + ref_mth(hashes[k:]))


def ref_path(m: int, hashes: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    n = len(hashes)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, hashes[:k]), ref_mth(hashes[k:])]
    return [*ref_path(m - k, hashes[k:]), ref_mth(hashes[:k])]


def ref_subproof(m: int, hashes: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(hashes)
    if m == n:
        return [] if b else [ref_mth(hashes)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, hashes[:k], b), ref_mth(hashes[k:])]
    return [*ref_subproof(m - k, hashes[k:], False), ref_mth(hashes[:k])]


def flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


# --------------------------------------------------------------------- hashing


def test_hashing_matches_rfc6962_reference_values() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert node_hash(a, b) != leaf_hash(a + b)
    assert node_hash(a, b) != node_hash(b, a)
    assert leaf_hash(b"") != EMPTY_ROOT


# -------------------------------------------------------------------- known roots


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_roots_of_reference_tree(ref_tree: MerkleTree, size: int) -> None:
    hashes = [leaf_hash(d) for d in LEAVES[:size]]
    assert ref_tree.root(size).hex() == ROOTS[size]
    assert root_from_leaf_hashes(hashes).hex() == ROOTS[size]
    compact = CompactRange()
    for leaf in hashes:
        compact.append(leaf)
    assert compact.root().hex() == ROOTS[size]


def test_empty_tree_root() -> None:
    assert MerkleTree().root() == EMPTY_ROOT
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert MerkleTree([leaf_hash(b"x")]).root(0) == EMPTY_ROOT


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_vectors(ref_tree: MerkleTree, index: int, size: int, proof: list[str]) -> None:
    got = ref_tree.inclusion_proof(index, size)
    assert [p.hex() for p in got] == proof
    leaf = leaf_hash(LEAVES[index])
    assert verify_inclusion(leaf, index, size, [h(p) for p in proof], h(ROOTS[size]))


@pytest.mark.parametrize(("m", "n", "proof"), CONSISTENCY_VECTORS)
def test_consistency_vectors(ref_tree: MerkleTree, m: int, n: int, proof: list[str]) -> None:
    got = ref_tree.consistency_proof(m, n)
    assert [p.hex() for p in got] == proof
    assert verify_consistency(m, n, [h(p) for p in proof], h(ROOTS[m]), h(ROOTS[n]))


# --------------------------------------------------- RFC 9162 §2.1.5 worked example


def test_rfc9162_seven_leaf_example() -> None:
    d = [leaf_hash(f"d{i}".encode()) for i in range(7)]
    a, b, c, dd, e, f, j = d  # j is d6's leaf, lifted unchanged to level 1
    g, hh, i = node_hash(a, b), node_hash(c, dd), node_hash(e, f)
    k, l_ = node_hash(g, hh), node_hash(i, j)
    tree = MerkleTree(d)
    assert tree.root() == node_hash(k, l_)
    # "The inclusion proof for d0 is [b, h, l]" ... "for d6 is [i, k]".
    assert tree.inclusion_proof(0) == [b, hh, l_]
    assert tree.inclusion_proof(3) == [c, g, l_]
    assert tree.inclusion_proof(4) == [f, j, k]
    assert tree.inclusion_proof(6) == [i, k]
    # hash0 = MTH(D[0:3]), hash1 = k, hash2 = MTH(D[0:6]).
    assert tree.root(3) == node_hash(g, c)
    assert tree.root(4) == k
    assert tree.root(6) == node_hash(k, i)
    # "PROOF(3, D[7]) = [c, d, g, l]", "PROOF(4, D[7]) = [l]", "PROOF(6, D[7]) = [i, j, k]".
    assert tree.consistency_proof(3) == [c, dd, g, l_]
    assert tree.consistency_proof(4) == [l_]
    assert tree.consistency_proof(6) == [i, j, k]
    for m in (3, 4, 6):
        assert verify_consistency(m, 7, tree.consistency_proof(m), tree.root(m), tree.root())


# ------------------------------------------------------------------- edge cases


def test_consistency_edge_cases_m_equals_n_and_m_zero() -> None:
    tree = MerkleTree(leaf_hash(d) for d in LEAVES)
    root8, root5 = tree.root(8), tree.root(5)
    assert tree.consistency_proof(8, 8) == []
    assert tree.consistency_proof(0, 8) == []
    assert tree.consistency_proof(0, 0) == []
    # m == n: only the identical root, with an empty proof.
    assert verify_consistency(8, 8, [], root8, root8)
    assert not verify_consistency(8, 8, [], root8, root5)
    assert not verify_consistency(8, 8, [root8], root8, root8)
    # m == 0: the old root must be MTH({}) = SHA-256(""); any new tree extends it.
    assert verify_consistency(0, 8, [], EMPTY_ROOT, root8)
    assert verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    assert not verify_consistency(0, 0, [], EMPTY_ROOT, root8)
    assert not verify_consistency(0, 8, [], root5, root8)
    assert not verify_consistency(0, 8, [EMPTY_ROOT], EMPTY_ROOT, root8)
    # 0 < m < n: an empty proof never verifies (RFC step 1); time travel never does.
    assert not verify_consistency(5, 8, [], root5, root8)
    assert not verify_consistency(8, 5, tree.consistency_proof(5, 8), root8, root5)


def test_inclusion_edge_cases() -> None:
    single = leaf_hash(b"data")
    assert verify_inclusion(single, 0, 1, [], single)
    assert not verify_inclusion(single, 0, 1, [], leaf_hash(b"other"))
    assert not verify_inclusion(b"", 0, 1, [], single)  # wrong hash size
    assert not verify_inclusion(single, 0, 1, [], b"")
    for index, size in [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 1)]:
        assert not verify_inclusion(single, index, size, [], single)
    assert not verify_inclusion(single, True, 2, [single], single)  # bool is not an index


def test_verifiers_reject_malformed_hashes_without_raising() -> None:
    tree = MerkleTree(leaf_hash(d) for d in LEAVES)
    proof = tree.inclusion_proof(2, 8)
    leaf = tree.leaf_hash(2)
    assert verify_inclusion(leaf, 2, 8, proof, tree.root())
    assert not verify_inclusion(leaf, 2, 8, [*proof[:-1], proof[-1][:31]], tree.root())
    assert not verify_inclusion(leaf, 2, 8, [*proof, b""], tree.root())
    cproof = tree.consistency_proof(3, 8)
    assert verify_consistency(3, 8, cproof, tree.root(3), tree.root())
    assert not verify_consistency(3, 8, [*cproof, b"x" * 33], tree.root(3), tree.root())
    assert not verify_consistency(3, 8, cproof, tree.root(3)[:-1], tree.root())


def test_generation_rejects_out_of_range_requests() -> None:
    tree = MerkleTree(leaf_hash(d) for d in LEAVES)
    with pytest.raises(ValueError):
        tree.inclusion_proof(8, 8)
    with pytest.raises(ValueError):
        tree.inclusion_proof(0, 9)  # beyond the tree
    with pytest.raises(ValueError):
        tree.inclusion_proof(-1, 4)
    with pytest.raises(ValueError):
        tree.consistency_proof(5, 4)
    with pytest.raises(ValueError):
        tree.consistency_proof(1, 9)
    with pytest.raises(ValueError):
        tree.root(9)
    with pytest.raises(ValueError):
        tree.leaf_hash(8)
    with pytest.raises(ValueError):
        subtree_hash(2, 5, tree.store.get)  # not an RFC-aligned range


def test_node_store_only_holds_complete_nodes() -> None:
    store = TreeLevels()
    store.extend(leaf_hash(bytes([i])) for i in range(5))
    assert store.size == 5
    assert store.get(2, 0) == node_hash(
        node_hash(store.get(0, 0), store.get(0, 1)), node_hash(store.get(0, 2), store.get(0, 3))
    )
    for level, index in [(0, 5), (1, 2), (2, 1), (3, 0), (-1, 0), (0, -1)]:
        with pytest.raises(LookupError):
            store.get(level, index)


def test_bad_leaf_hash_is_rejected_and_leaves_tree_untouched() -> None:
    tree = MerkleTree(leaf_hash(d) for d in LEAVES[:3])
    before = tree.root()
    with pytest.raises(ValueError):
        tree.extend_leaf_hashes([leaf_hash(b"ok"), b"short"])
    assert tree.size == 3
    assert tree.root() == before
    with pytest.raises(ValueError):
        CompactRange().append(b"short")


def test_compact_range_resumes_from_saved_state() -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(1000)]
    first = CompactRange()
    first.extend(hashes[:613])
    assert len(first.nodes) == bin(613).count("1")
    resumed = CompactRange.from_state(first.size, first.nodes)
    resumed.extend(hashes[613:])
    assert resumed.size == 1000
    assert resumed.root() == ref_mth(hashes)
    with pytest.raises(ValueError):
        CompactRange.from_state(613, first.nodes[:-1])


def test_one_by_one_append_equals_bulk_build() -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
    bulk = MerkleTree(hashes)
    single = MerkleTree()
    for i, leaf in enumerate(hashes):
        assert single.append_leaf_hash(leaf) == i
        if i % 37 == 0:
            assert single.root() == ref_mth(hashes[: i + 1])
    mixed = MerkleTree(hashes[:100])
    mixed.extend_leaf_hashes(hashes[100:299])
    mixed.append_leaf_hash(hashes[299])
    for level in range(9):
        for index in range(300 >> level):
            assert single.store.get(level, index) == bulk.store.get(level, index)
            assert mixed.store.get(level, index) == bulk.store.get(level, index)
    assert MerkleTree().append(b"entry") == 0


def test_proof_functions_work_on_any_node_getter() -> None:
    """The DB-backed store only has to answer get(level, index)."""
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(21)]
    nodes: dict[tuple[int, int], bytes] = {}
    for level in range(5):
        width = 1 << level
        for index in range(21 // width):
            nodes[level, index] = ref_mth(hashes[index * width : (index + 1) * width])

    def get(level: int, index: int) -> bytes:  # a plain mapping, as a SQL table would be
        return nodes[level, index]

    assert inclusion_proof(13, 21, get) == ref_path(13, hashes)
    assert consistency_proof(11, 21, get) == ref_subproof(11, hashes, True)
    assert subtree_hash(0, 21, get) == ref_mth(hashes)


# -------------------------------------------------------------------- brute force

BRUTE_N = 64
_BRUTE_HASHES = [leaf_hash(b"entry %d" % i) for i in range(BRUTE_N)]


@pytest.fixture(scope="module")
def brute_tree() -> MerkleTree:
    return MerkleTree(_BRUTE_HASHES)


def test_brute_force_inclusion(brute_tree: MerkleTree) -> None:
    rng = random.Random(9162)
    roots = [brute_tree.root(s) for s in range(BRUTE_N + 1)]
    checked = 0
    for n in range(1, BRUTE_N + 1):
        hashes = _BRUTE_HASHES[:n]
        root = brute_tree.root(n)
        assert root == ref_mth(hashes)
        for index in range(n):
            proof = brute_tree.inclusion_proof(index, n)
            assert proof == ref_path(index, hashes), (index, n)
            leaf = hashes[index]
            assert verify_inclusion(leaf, index, n, proof, root)
            checked += 1
            # Any single flipped bit, in the leaf, the root or any proof element, fails.
            bit = rng.randrange(256)
            assert not verify_inclusion(flip(leaf, bit), index, n, proof, root)
            assert not verify_inclusion(leaf, index, n, proof, flip(root, bit))
            for pos in range(len(proof)):
                bad = list(proof)
                bad[pos] = flip(bad[pos], rng.randrange(256))
                assert not verify_inclusion(leaf, index, n, bad, root)
            # Any other index fails.
            for other in range(n + 1):
                if other != index:
                    assert not verify_inclusion(leaf, other, n, proof, root), (other, index, n)
            # The proof does not show the leaf in a tree of any other size (with that
            # tree's genuine root), nor in a tree too small to hold the index.
            for other_n in range(index + 1, BRUTE_N + 1):
                if other_n != n:
                    assert not verify_inclusion(leaf, index, other_n, proof, roots[other_n])
            assert not verify_inclusion(leaf, index, index, proof, root)
            # Truncated, extended or reordered proofs fail.
            if proof:
                assert not verify_inclusion(leaf, index, n, proof[:-1], root)
            assert not verify_inclusion(leaf, index, n, [*proof, root], root)
            assert not verify_inclusion(leaf, index, n, [root, *proof], root)
            if len(proof) > 1 and proof[0] != proof[1]:
                swapped = [proof[1], proof[0], *proof[2:]]
                assert not verify_inclusion(leaf, index, n, swapped, root)
    assert checked == BRUTE_N * (BRUTE_N + 1) // 2


def test_brute_force_consistency(brute_tree: MerkleTree) -> None:
    rng = random.Random(6962)
    roots = [brute_tree.root(s) for s in range(BRUTE_N + 1)]
    checked = 0
    for n in range(0, BRUTE_N + 1):
        hashes = _BRUTE_HASHES[:n]
        for m in range(0, n + 1):
            proof = brute_tree.consistency_proof(m, n)
            expected = [] if m in (0, n) else ref_subproof(m, hashes, True)
            assert proof == expected, (m, n)
            assert verify_consistency(m, n, proof, roots[m], roots[n]), (m, n)
            checked += 1
            if m == n:
                if n:
                    assert not verify_consistency(m, n, proof, roots[m], roots[n - 1])
                continue
            # Every bit flip in a root or a proof element fails (for m == 0 the new root
            # is free by definition: every tree extends the empty one).
            bit = rng.randrange(256)
            assert not verify_consistency(m, n, proof, flip(roots[m], bit), roots[n])
            if m == 0:
                assert verify_consistency(m, n, proof, roots[m], flip(roots[n], bit))
                continue
            assert not verify_consistency(m, n, proof, roots[m], flip(roots[n], bit))
            for pos in range(len(proof)):
                bad = list(proof)
                bad[pos] = flip(bad[pos], rng.randrange(256))
                assert not verify_consistency(m, n, bad, roots[m], roots[n])
            # The proof relates no other pair of sizes (each with its genuine root).
            for other_m in range(0, n + 1):
                if other_m != m:
                    assert not verify_consistency(other_m, n, proof, roots[other_m], roots[n])
            for other_n in range(m, BRUTE_N + 1):
                if other_n != n:
                    assert not verify_consistency(m, other_n, proof, roots[m], roots[other_n])
            assert not verify_consistency(m, n, proof, roots[n], roots[m])  # swapped
            assert not verify_consistency(m, n, [], roots[m], roots[n])
            assert not verify_consistency(m, n, proof[:-1], roots[m], roots[n])
            assert not verify_consistency(m, n, [*proof, roots[n]], roots[m], roots[n])
            assert not verify_consistency(m, n, [roots[m], *proof], roots[m], roots[n])
    assert checked == (BRUTE_N + 1) * (BRUTE_N + 2) // 2


def test_random_proofs_in_a_larger_tree() -> None:
    rng = random.Random(42)
    n = 5000
    hashes = [leaf_hash(rng.randbytes(16)) for _ in range(n)]
    tree = MerkleTree(hashes)
    assert tree.root() == ref_mth(hashes) == root_from_leaf_hashes(hashes)
    for _ in range(25):
        size = rng.randrange(1, n + 1)
        index = rng.randrange(size)
        old = rng.randrange(1, size + 1)
        assert tree.inclusion_proof(index, size) == ref_path(index, hashes[:size])
        assert verify_inclusion(
            hashes[index], index, size, tree.inclusion_proof(index, size), tree.root(size)
        )
        proof = tree.consistency_proof(old, size)
        if old < size:
            assert proof == ref_subproof(old, hashes[:size], True)
        assert verify_consistency(old, size, proof, tree.root(old), tree.root(size))
