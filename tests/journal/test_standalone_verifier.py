"""tools/verify_journal.py: the auditor's verifier, run as a separate process.

The tool must agree with the library on everything the library produces, and reject what
the library rejects, while importing nothing from hdsvault.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hdsvault.journal.checkpoint import Checkpoint, sign, sign_note, verifier_key
from hdsvault.journal.merkle import EMPTY_ROOT, MerkleTree, leaf_hash, verify_consistency

TOOL = Path(__file__).resolve().parents[2] / "tools" / "verify_journal.py"
ORIGIN = "hdsvault.test/journal"
N = 37


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b"k" * 32)


@pytest.fixture(scope="module")
def vkey(key: Ed25519PrivateKey) -> str:
    return verifier_key(ORIGIN, key.public_key())


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    return MerkleTree(leaf_hash(b"entry %d" % i) for i in range(N))


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_journal_under_test", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode, no PYTHONPATH, no user site, script directory not on sys.path.
    return subprocess.run(
        [sys.executable, "-I", str(TOOL), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_checkpoint(
    path: Path, tree: MerkleTree, size: int, key: Ed25519PrivateKey, origin: str = ORIGIN
) -> Path:
    path.write_text(sign(Checkpoint(origin, size, tree.root(size)), origin, key), "utf-8")
    return path


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), "utf-8")
    return path


def inclusion_doc(tree: MerkleTree, index: int, size: int) -> dict[str, Any]:
    return {
        "type": "inclusion",
        "index": index,
        "tree_size": size,
        "leaf_hash": tree.leaf_hash(index).hex(),
        "hashes": [h.hex() for h in tree.inclusion_proof(index, size)],
    }


def consistency_doc(tree: MerkleTree, m: int, n: int) -> dict[str, Any]:
    return {
        "type": "consistency",
        "old_size": m,
        "new_size": n,
        "hashes": [h.hex() for h in tree.consistency_proof(m, n)],
    }


# ------------------------------------------------------------------- independence


def test_tool_imports_only_stdlib_basics_and_cryptography() -> None:
    allowed = {"base64", "hashlib", "json", "sys", "cryptography"}
    imported: set[str] = set()
    for node in ast.walk(ast.parse(TOOL.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            pytest.fail("dynamic import in the standalone tool")
    assert imported <= allowed, imported - allowed


# ---------------------------------------------------------------------- checkpoint


def test_checkpoint_ok(tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey, vkey: str) -> None:
    cp = write_checkpoint(tmp_path / "cp.txt", tree, N, key)
    result = run("checkpoint", "--key", vkey, cp, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{ORIGIN} size {N} root {tree.root().hex()}" in result.stdout


def test_checkpoint_with_another_key_fails(
    tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey
) -> None:
    cp = write_checkpoint(tmp_path / "cp.txt", tree, N, key)
    other = verifier_key(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"o" * 32).public_key())
    result = run("checkpoint", "--key", other, cp, cwd=tmp_path)
    assert result.returncode == 1
    assert "INVALID: " in result.stderr and "no signature by key" in result.stderr


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: t.replace(f"\n{N}\n", f"\n{N + 1}\n"), "does not verify"),
        (lambda t: t.replace("\n", "\r\n"), "control character"),
        (lambda t: t[:-1], "not a signed note"),
        (lambda t: t.replace("— ", "-- "), "malformed signature line"),
    ],
)
def test_checkpoint_tampered_or_malformed_fails(
    tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey, vkey: str, mangle: Any, reason: str
) -> None:
    cp = write_checkpoint(tmp_path / "cp.txt", tree, N, key)
    cp.write_text(mangle(cp.read_text("utf-8")), "utf-8")
    result = run("checkpoint", "--key", vkey, cp, cwd=tmp_path)
    assert result.returncode == 1
    assert reason in result.stderr


def test_checkpoint_with_non_canonical_size_fails(
    tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey, vkey: str
) -> None:
    root64 = sign(Checkpoint(ORIGIN, 1, tree.root(1)), ORIGIN, key).split("\n")[2]
    cp = tmp_path / "cp.txt"
    cp.write_text(sign_note(f"{ORIGIN}\n01\n{root64}\n", ORIGIN, key), "utf-8")
    result = run("checkpoint", "--key", vkey, cp, cwd=tmp_path)
    assert result.returncode == 1
    assert "canonical tree size" in result.stderr


# ----------------------------------------------------------------------- inclusion


def test_inclusion_ok_and_tampered(
    tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey, vkey: str
) -> None:
    cp = write_checkpoint(tmp_path / "cp.txt", tree, N, key)
    doc = inclusion_doc(tree, 11, N)
    ok = run(
        "inclusion",
        "--key",
        vkey,
        "--checkpoint",
        cp,
        write_json(tmp_path / "p.json", doc),
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert f"is at index 11 of {ORIGIN} size {N}" in ok.stdout

    cases = {
        "flipped hash": {**doc, "hashes": [doc["hashes"][0][:-1] + "0", *doc["hashes"][1:]]},
        "wrong index": {**doc, "index": 12},
        "wrong leaf": {**doc, "leaf_hash": leaf_hash(b"forged").hex()},
        "truncated": {**doc, "hashes": doc["hashes"][:-1]},
    }
    assert doc["hashes"][0][-1] != "0"
    for name, bad in cases.items():
        result = run(
            "inclusion",
            "--key",
            vkey,
            "--checkpoint",
            cp,
            write_json(tmp_path / "bad.json", bad),
            cwd=tmp_path,
        )
        assert result.returncode == 1, name
        assert "is NOT at index" in result.stderr, name


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"type": "consistency"}, "not a inclusion proof"),
        ([], "not a inclusion proof"),
        ({"type": "inclusion", "hashes": "ab"}, "'hashes' must be a list"),
        ({"type": "inclusion", "hashes": ["zz" * 32]}, "64 hex digits"),
        ({"type": "inclusion", "hashes": ["ab" * 31]}, "64 hex digits"),
        ({"type": "inclusion", "hashes": [], "index": -1}, "non-negative integer"),
        ({"type": "inclusion", "hashes": [], "index": True}, "non-negative integer"),
        ({"type": "inclusion", "hashes": [], "index": 0}, "'leaf_hash' must be 64 hex"),
        (
            {"type": "inclusion", "hashes": [], "index": 0, "leaf_hash": "00" * 32, "tree_size": 3},
            "proof is for tree size 3",
        ),
    ],
)
def test_inclusion_malformed_proof_files(
    tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey, vkey: str, doc: Any, reason: str
) -> None:
    cp = write_checkpoint(tmp_path / "cp.txt", tree, N, key)
    result = run(
        "inclusion",
        "--key",
        vkey,
        "--checkpoint",
        cp,
        write_json(tmp_path / "p.json", doc),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert reason in result.stderr


def test_inclusion_not_json(
    tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey, vkey: str
) -> None:
    cp = write_checkpoint(tmp_path / "cp.txt", tree, N, key)
    bad = tmp_path / "p.json"
    bad.write_bytes(b"{not json")
    result = run("inclusion", "--key", vkey, "--checkpoint", cp, bad, cwd=tmp_path)
    assert result.returncode == 1
    assert "not a JSON document" in result.stderr


# --------------------------------------------------------------------- consistency


@pytest.mark.parametrize(("m", "n"), [(13, N), (16, N), (N, N), (0, N), (1, 2)])
def test_consistency_ok(
    tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey, vkey: str, m: int, n: int
) -> None:
    old = write_checkpoint(tmp_path / "old.txt", tree, m, key)
    new = write_checkpoint(tmp_path / "new.txt", tree, n, key)
    proof = write_json(tmp_path / "c.json", consistency_doc(tree, m, n))
    result = run("consistency", "--key", vkey, "--old", old, "--new", new, proof, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"size {n} extends size {m}" in result.stdout


def test_consistency_rewritten_history_fails(
    tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey, vkey: str
) -> None:
    old = write_checkpoint(tmp_path / "old.txt", tree, 13, key)
    # A journal whose entry 5 was rewritten after the old checkpoint was published.
    forked = MerkleTree(leaf_hash(b"rewritten" if i == 5 else b"entry %d" % i) for i in range(N))
    new = write_checkpoint(tmp_path / "new.txt", forked, N, key)
    proof = write_json(tmp_path / "c.json", consistency_doc(forked, 13, N))
    result = run("consistency", "--key", vkey, "--old", old, "--new", new, proof, cwd=tmp_path)
    assert result.returncode == 1
    assert "is NOT an append-only extension" in result.stderr


def test_consistency_mismatches_fail(
    tmp_path: Path, tree: MerkleTree, key: Ed25519PrivateKey, vkey: str
) -> None:
    old = write_checkpoint(tmp_path / "old.txt", tree, 13, key)
    new = write_checkpoint(tmp_path / "new.txt", tree, N, key)
    other_log = write_checkpoint(tmp_path / "other.txt", tree, N, key, origin="other.test/log")
    proof = write_json(tmp_path / "c.json", consistency_doc(tree, 13, N))
    swapped = run("consistency", "--key", vkey, "--old", new, "--new", old, proof, cwd=tmp_path)
    assert swapped.returncode == 1 and "proof sizes do not match" in swapped.stderr
    # other.test/log is signed by a key named after it, so the log key does not vouch for it.
    foreign = run(
        "consistency", "--key", vkey, "--old", old, "--new", other_log, proof, cwd=tmp_path
    )
    assert foreign.returncode == 1 and "no signature by key" in foreign.stderr
    # Same key name, different origin line: caught by the origin comparison.
    renamed = tmp_path / "renamed.txt"
    renamed.write_text(
        sign_note(
            new.read_text("utf-8").split("\n\n")[0].replace(ORIGIN, "other.test/log") + "\n",
            ORIGIN,
            key,
        ),
        "utf-8",
    )
    two_logs = run(
        "consistency", "--key", vkey, "--old", old, "--new", renamed, proof, cwd=tmp_path
    )
    assert two_logs.returncode == 1 and "two logs" in two_logs.stderr


# ------------------------------------------------------------------------- usage


def test_usage_errors_exit_2(tmp_path: Path, vkey: str) -> None:
    assert run(cwd=tmp_path).returncode == 2
    assert run("frobnicate", "--key", vkey, "x", cwd=tmp_path).returncode == 2
    assert run("checkpoint", "x", cwd=tmp_path).returncode == 2  # no --key
    missing = run("checkpoint", "--key", vkey, tmp_path / "absent.txt", cwd=tmp_path)
    assert missing.returncode == 2 and "absent.txt" in missing.stderr


# ------------------------------------------------ agreement with the library verifier


def test_tool_agrees_with_library_on_all_small_trees(tool: ModuleType) -> None:
    """Same verdict as hdsvault.journal.merkle, on valid and corrupted proofs."""
    rng = random.Random(7)
    hashes = [leaf_hash(b"%d" % i) for i in range(33)]
    tree = MerkleTree(hashes)
    roots = [tree.root(s) for s in range(34)]
    for n in range(0, 34):
        for m in range(0, n + 1):
            proof = tree.consistency_proof(m, n)
            assert tool.verify_consistency(m, n, proof, roots[m], roots[n])
            for wrong_m in (m - 1, m + 1):
                if 0 <= wrong_m <= n:
                    args = (wrong_m, n, proof, roots[wrong_m], roots[n])
                    assert tool.verify_consistency(*args) is verify_consistency(*args)
                    if 0 < wrong_m < n:
                        assert not tool.verify_consistency(*args)
            if proof:
                bad = list(proof)
                bad[rng.randrange(len(bad))] = leaf_hash(b"x")
                assert tool.verify_consistency(m, n, bad, roots[m], roots[n]) is verify_consistency(
                    m, n, bad, roots[m], roots[n]
                )
                assert not tool.verify_consistency(m, n, bad, roots[m], roots[n])
        for index in range(n):
            proof = tree.inclusion_proof(index, n)
            assert tool.verify_inclusion(hashes[index], index, n, proof, roots[n])
            for other in range(n):
                if other != index:
                    assert not tool.verify_inclusion(hashes[index], other, n, proof, roots[n])
    assert tool.verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    assert not tool.verify_consistency(0, 5, [], roots[3], roots[5])
