"""Cryptographic primitives of hdsvault (core layer: no HTTP, no database).

Invariant 3 ("no clear health data at rest") rests on this package:

- :mod:`hdsvault.crypto.aead` seals resource bodies and other payloads with AES-256-GCM under
  per-tenant, versioned data keys, bound to *where* the ciphertext belongs (tenant, kind, id,
  version) so that a ciphertext copied elsewhere does not open;
- :mod:`hdsvault.crypto.blind_index` turns search keys into keyed tokens (HMAC-SHA256), so the
  database can match equal values without ever holding them;
- :mod:`hdsvault.crypto.kek` and :mod:`hdsvault.crypto.pkcs11_kek` provide the key-encryption
  key (a local file, or an AES key that never leaves an HSM) that wraps the per-tenant keys;
- :mod:`hdsvault.crypto.keyring` stores the wrapped keys and manages rotation and shredding.

Formats and the key hierarchy are documented in ``docs/keys.md``.
"""
