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
