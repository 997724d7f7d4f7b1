"""The journal's identity: origin names, the Ed25519 checkpoint key and the leaf MAC key.

Both keys are platform secrets kept wrapped by the KEK in ``platform_keys`` (the keyring holds
them); the public verifier key is what witnesses and auditors keep.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hdsvault.journal import checkpoint

SIGNING_PURPOSE = "journal-signing"
MAC_PURPOSE = "journal-mac"


@dataclass(frozen=True)
class JournalSigner:
    """Signs checkpoints and MACs leaves for one platform."""

    platform_id: str
    signing_key: Ed25519PrivateKey
    mac_key: bytes

    @classmethod
    def from_secrets(cls, platform_id: str, signing_seed: bytes, mac_key: bytes) -> JournalSigner:
        return cls(platform_id, Ed25519PrivateKey.from_private_bytes(signing_seed), mac_key)

    @property
    def key_name(self) -> str:
        return f"hdsvault-{self.platform_id}"

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    @property
    def verifier_key(self) -> str:
        """``<name>+<key id>+<base64 key>``: what a witness needs to check checkpoints."""
        return checkpoint.verifier_key(self.key_name, self.public_key)

    def origin(self, log_id: str) -> str:
        """The checkpoint origin line: one per platform and log."""
        return f"hdsvault.{self.platform_id}/{log_id}"

    def leaf_mac(self, log_id: str, seq: int, leaf_hash: bytes) -> bytes:
        """HMAC binding a leaf hash to its log and index.

        Lets ``verify`` name the exact forged entry even when an attacker with database access
        rewrote entries, leaf hashes and tree nodes together: without the KEK they cannot
        recompute the MACs.
        """
        msg = log_id.encode() + b"\x00" + seq.to_bytes(8, "big") + leaf_hash
        return hmac.digest(self.mac_key, msg, "sha256")
