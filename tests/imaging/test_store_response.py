"""C-STORE responses packed directly are byte for byte what pynetdicom would send; its
standard (logging) handlers are bound only when its logs would show."""

from __future__ import annotations

from pathlib import Path

import pytest
from imaging_helpers import Dimse, rows_in, sample, sample_bytes
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from hdsvault.dicom import store_response
from hdsvault.platform import Platform


def response(**fields: object) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.Status = 0x0000
    for name, value in fields.items():
        setattr(rsp, name, value)
    return rsp


def pynetdicom_encoding(rsp: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    encoded = encode(message.command_set, True, True)
    assert isinstance(encoded, bytes)
    return encoded


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"AffectedSOPClassUID": UID("1.2.840.10008.5.1.4.1.1.2")},  # odd length: padded
        {
            "AffectedSOPClassUID": UID("1.2.840.10008.5.1.4.1.1.4"),
            "AffectedSOPInstanceUID": UID("1.2.3.44"),  # even length
            "Status": 0xB000,
            "MessageIDBeingRespondedTo": 65535,
        },
        {"AffectedSOPInstanceUID": UID("1.2.3.4.5"), "Status": 0xA700},
    ],
)
def test_packed_response_equals_pynetdicom_encoding(fields: dict[str, object]) -> None:
    rsp = response(**fields)
    assert store_response.command_set(rsp) == pynetdicom_encoding(rsp)


def test_responses_with_optional_elements_keep_pynetdicom_path() -> None:
    assert store_response.command_set(response(ErrorComment="disk full")) is None
    assert store_response.command_set(response(OffendingElement=[0x00100010])) is None


def test_pynetdicom_standard_handlers_follow_its_log_level() -> None:
    import logging

    from pynetdicom import _config

    from hdsvault.dicom.server import quiet_standard_handlers

    logger = logging.getLogger("pynetdicom")
    saved = logger.level, _config.LOG_HANDLER_LEVEL
    try:
        logger.setLevel(logging.WARNING)
        quiet_standard_handlers()
        assert _config.LOG_HANDLER_LEVEL == "none"  # nothing would be shown: not bound
        logger.setLevel(logging.DEBUG)
        quiet_standard_handlers()
        assert _config.LOG_HANDLER_LEVEL == "standard"  # an operator asked for them
    finally:
        logger.setLevel(saved[0])
        _config.LOG_HANDLER_LEVEL = saved[1]


@pytest.mark.parametrize(("level", "bound"), [("info", "none"), ("debug", "standard")])
def test_default_logging_leaves_pynetdicom_standard_handlers_unbound(
    level: str, bound: str
) -> None:
    """At the default level (info) pynetdicom's per-message lines are not shown, so its
    standard handlers stay unbound; an operator gets them back at debug."""
    import logging

    from pynetdicom import _config

    from hdsvault.dicom.server import quiet_standard_handlers
    from hdsvault.logs import configure_logging

    root, logger = logging.getLogger(), logging.getLogger("pynetdicom")
    saved = root.level, list(root.handlers), logger.level, _config.LOG_HANDLER_LEVEL
    try:
        configure_logging(level)
        quiet_standard_handlers()
        assert bound == _config.LOG_HANDLER_LEVEL
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logger.setLevel(saved[2])
        _config.LOG_HANDLER_LEVEL = saved[3]


def test_the_listener_reads_without_pydicom_validation(dimse: Dimse) -> None:
    from pydicom import config

    assert config.settings.reading_validation_mode == config.IGNORE


def test_malformed_stores_are_refused_nothing_kept_and_the_listener_goes_on(
    dimse: Dimse, platform: Platform, tmp_path: Path
) -> None:
    """Bad input over DIMSE, with pydicom's read validation off and plain responses packed:
    a data set without its study and series UIDs, and bytes that are no data set at all
    (sent as they are from a file whose meta is valid), each get a failure status; nothing
    is indexed; the same association then stores a good instance and answers C-ECHO."""
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

    from hdsvault.db.schema import imaging_instances

    no_uids = dcmread(sample("CT_small.dcm"))
    del no_uids.StudyInstanceUID, no_uids.SeriesInstanceUID
    good = sample_bytes("CT_small.dcm")
    # Everything up to the SOP Instance UID (what pynetdicom reads to send it), then a Study
    # Date that claims 255 bytes and has 4: a data set cut in the middle of an element.
    cut = good.index(b"\x08\x00\x20\x00DA")
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(good[:cut] + b"\x08\x00\x20\x00DA\xff\x002026")

    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate(dimse.host, dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(no_uids).Status == 0xC000
        assert assoc.send_c_store(garbage).Status not in (0x0000, None)
        assert rows_in(platform, imaging_instances) == 0
        assert assoc.send_c_store(sample("CT_small.dcm")).Status == 0x0000
        assert assoc.send_c_echo().Status == 0x0000
        assert rows_in(platform, imaging_instances) == 1
    finally:
        assoc.release()
