"""C-STORE responses packed directly are byte for byte what pynetdicom would send; its
standard (logging) handlers are bound only when its logs would show."""

from __future__ import annotations

import pytest
from imaging_helpers import Dimse
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from hdsvault.dicom import store_response


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


def test_the_listener_reads_without_pydicom_validation(dimse: Dimse) -> None:
    from pydicom import config

    assert config.settings.reading_validation_mode == config.IGNORE
