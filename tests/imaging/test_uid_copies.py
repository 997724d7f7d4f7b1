"""Accepting an association copies the supported contexts without rebuilding every UID.

pynetdicom deep-copies the acceptor's presentation contexts per association; with UIDs copied
by reference (``hdsvault.dicom.uids``) the copy still gives each association contexts of its
own (negotiation writes into them), and the UIDs keep their value and type.
"""

from __future__ import annotations

import copy

import pytest
from imaging_helpers import Dimse
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from hdsvault.dicom import uids

pytestmark = pytest.mark.timeout(60)


def test_a_uid_copy_is_the_uid_and_contexts_stay_separate() -> None:
    uids.install()
    uids.install()  # idempotent
    uid = UID("1.2.840.10008.5.1.4.1.1.2")
    assert copy.deepcopy(uid) is uid and copy.copy(uid) is uid
    ae = AE()
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    (original,) = ae.supported_contexts
    (copied,) = copy.deepcopy([original])
    assert copied is not original
    assert copied.transfer_syntax == original.transfer_syntax
    assert copied.transfer_syntax is not original.transfer_syntax
    assert isinstance(copied.abstract_syntax, UID) and copied.abstract_syntax == CTImageStorage
    copied.result = 0x03  # what negotiation does to an association's copy
    copied.transfer_syntax = []
    assert original.result is None and original.transfer_syntax == [ExplicitVRLittleEndian]


def test_a_context_holding_something_else_is_copied_the_generic_way() -> None:
    uids.install()
    ae = AE()
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    (original,) = ae.supported_contexts
    original.extra = {"roles": [1]}  # type: ignore[attr-defined]  # a later pynetdicom's state
    (copied,) = copy.deepcopy([original])
    assert copied.extra == {"roles": [1]} and copied.extra is not original.extra
    assert copied.extra["roles"] is not original.extra["roles"]
    assert copied.transfer_syntax == [ExplicitVRLittleEndian]
    assert copied.transfer_syntax is not original.transfer_syntax


def test_associations_negotiate_with_the_copied_contexts(dimse: Dimse) -> None:
    for _ in range(2):  # the second association copies from the same, untouched contexts
        ae = AE(ae_title="DCMTK")
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        assoc = ae.associate(dimse.host, dimse.port, ae_title=dimse.ae_title)
        assert assoc.is_established
        try:
            (accepted,) = assoc.accepted_contexts
            assert accepted.abstract_syntax == CTImageStorage
            assert accepted.transfer_syntax == [ExplicitVRLittleEndian]
        finally:
            assoc.release()


def test_the_locked_pynetdicom_set_uid_is_the_one_remembered() -> None:
    # A pynetdicom upgrade that changes set_uid fails here, not silently in production.
    import importlib

    assert uids.original_set_uid_digest() == uids.PYNETDICOM_SET_UID_SHA256
    uids.install()
    for name in uids.SET_UID_USERS:
        assert importlib.import_module(f"pynetdicom.{name}").set_uid is uids.set_uid


def test_a_changed_set_uid_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from pynetdicom import pdu_items
    from pynetdicom import utils as pynetdicom_utils

    monkeypatch.setattr(pynetdicom_utils, "set_uid", uids._original_set_uid)
    monkeypatch.setattr(pdu_items, "set_uid", uids._original_set_uid)
    monkeypatch.setattr(uids, "PYNETDICOM_SET_UID_SHA256", "0" * 64)
    uids.install()
    assert pdu_items.set_uid is uids._original_set_uid


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        ("1.2.840.10008.1.2.1", (True, True, True)),
        (b"1.2.840.10008.1.2.1\x00", (True, True, True)),  # as decoded from a PDU
        (UID("1.2.840.10008.1.2.4.50"), (True, False, True)),
        ("1.02.3", (True, True, True)),  # non-conformant, accepted by pynetdicom's rules
        ("", (True, True, True)),
        (None, (True, True, True)),
        ("1.2.3", (True, True, False)),
    ],
)
def test_a_remembered_check_answers_as_pynetdicom(value: object, flags: tuple[bool, ...]) -> None:
    for _ in range(2):  # first call, then from memory
        ours = uids.set_uid(value, "Abstract Syntax", *flags)
        theirs = uids._original_set_uid(value, "Abstract Syntax", *flags)  # type: ignore[arg-type]
        assert ours == theirs and type(ours) is type(theirs)
        if isinstance(value, UID):
            assert ours is value  # itself (pynetdicom returns an equal copy: immutable)


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        ("1." + "2" * 70, (True, True, True)),  # longer than 64 characters
        ("", (False, True, True)),  # empty where not allowed
        (None, (True, False, True)),  # None where not allowed
        (12, (True, True, True)),  # not a UID at all
    ],
)
def test_a_refused_uid_is_refused_by_name_every_time(
    value: object, flags: tuple[bool, ...]
) -> None:
    for _ in range(2):
        with pytest.raises((ValueError, TypeError)) as ours:
            uids.set_uid(value, "Transfer Syntax Name", *flags)
        with pytest.raises((ValueError, TypeError)) as theirs:
            uids._original_set_uid(value, "Transfer Syntax Name", *flags)  # type: ignore[arg-type]
        assert str(ours.value) == str(theirs.value)
        assert type(ours.value) is type(theirs.value)


def test_a_uid_carrying_attributes_goes_through_pynetdicom() -> None:
    private = UID("1.2.3.4.5.6")
    private.set_private_encoding(False, True)  # a private transfer syntax's encoding
    checked = uids.set_uid(private, "Transfer Syntax Name")
    assert checked == private and checked.is_private
    assert checked._PRIVATE_TS_ENCODING == (False, True)  # type: ignore[union-attr]


def test_remembered_checks_are_bounded() -> None:
    assert uids._checked.cache_info().maxsize == 4096
