"""A throwaway SoftHSM2 token works through python-pkcs11 as the HSM key provider will use it.

Also pins down which AES mechanisms this SoftHSM2 build offers, since the crypto layer's
PKCS#11 key provider depends on them (AES-GCM for wrapping data keys; AES key wrap with
padding as the standard alternative).
"""

from __future__ import annotations

import os

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from support.softhsm import SoftHSMToken, open_token

pytestmark = pytest.mark.hsm


def test_token_is_private_and_env_points_to_it(softhsm_token: SoftHSMToken) -> None:
    assert os.environ["SOFTHSM2_CONF"] == str(softhsm_token.conf_path)
    assert softhsm_token.token_dir.is_dir()
    token = open_token(softhsm_token)
    assert token.label == softhsm_token.token_label


def test_aes_gcm_roundtrip_with_aad(softhsm_token: SoftHSMToken) -> None:
    token = open_token(softhsm_token)
    with token.open(user_pin=softhsm_token.pin, rw=True) as session:
        key = session.generate_key(KeyType.AES, 256, label="kek-gcm", store=True)
        iv = os.urandom(12)
        aad = b"tenant=demo;key=v1"
        plaintext = b"a data-encryption key, 32 bytes!"
        params = pkcs11.GCMParams(iv, aad, 128)
        ciphertext = key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params)
        assert len(ciphertext) == len(plaintext) + 16  # ciphertext || 128-bit tag
        assert key.decrypt(ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=params) == (
            plaintext
        )

        # Authentication really is checked: wrong AAD or a flipped bit is refused.
        wrong_aad = pkcs11.GCMParams(iv, b"tenant=other;key=v1", 128)
        with pytest.raises(pkcs11.PKCS11Error):
            key.decrypt(ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=wrong_aad)
        tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        with pytest.raises(pkcs11.PKCS11Error):
            key.decrypt(tampered, mechanism=Mechanism.AES_GCM, mechanism_param=params)

        # store=True: the key is a token object, found again by label in a new search.
        found = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label="kek-gcm")
        assert found[Attribute.VALUE_LEN] == 32


def test_aes_key_wrap_pad_roundtrip(softhsm_token: SoftHSMToken) -> None:
    """RFC 5649 key wrap of an extractable key: the non-AEAD alternative to GCM."""
    token = open_token(softhsm_token)
    with token.open(user_pin=softhsm_token.pin, rw=True) as session:
        kek = session.generate_key(KeyType.AES, 256, label="kek-wrap", store=False)
        dek = session.generate_key(
            KeyType.AES,
            256,
            store=False,
            template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )
        wrapped = kek.wrap_key(dek, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        assert len(wrapped) == 40
        unwrapped = kek.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            wrapped,
            mechanism=Mechanism.AES_KEY_WRAP_PAD,
            store=False,
            template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )
        assert unwrapped[Attribute.VALUE] == dek[Attribute.VALUE]


def test_mechanisms_offered(softhsm_token: SoftHSMToken) -> None:
    token = open_token(softhsm_token)
    mechanisms = set(token.slot.get_mechanisms())
    for needed in (
        Mechanism.AES_KEY_GEN,
        Mechanism.AES_GCM,
        Mechanism.AES_KEY_WRAP,
        Mechanism.AES_KEY_WRAP_PAD,
        Mechanism.SHA256_HMAC,
        Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
        Mechanism.EDDSA,
    ):
        assert needed in mechanisms, needed
