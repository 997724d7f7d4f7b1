"""Errors of the crypto layer.

Messages are written for the operator who reads them in a log or on a terminal: they say what
failed and, for configuration problems, what to do. They never contain key material, plaintext
or ciphertext bytes, because logs are not a place where health data or secrets may land.
"""

from __future__ import annotations

__all__ = ["CryptoError", "DecryptionError", "KekError"]


class CryptoError(Exception):
    """Base class of every error raised by :mod:`hdsvault.crypto`."""


class DecryptionError(CryptoError):
    """A ciphertext or wrapped key does not open.

    The ciphertext is truncated or tampered with, it was moved to another context (tenant,
    kind, item, version), or the key is the wrong one / unknown. AEAD cannot tell these apart,
    and the message does not try to: it names the context, never the key or the data.
    """


class KekError(CryptoError):
    """The key-encryption key is unavailable or misconfigured.

    The message says exactly what is wrong and what to run or change, e.g.
    ``key file /x/kek.key is readable by group/others (mode 0644); run: chmod 600 /x/kek.key``.
    """
