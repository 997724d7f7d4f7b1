"""The one error of the imaging service; faces map its kind to an HTTP or DIMSE status."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    INVALID = "invalid"  # not DICOM, missing UIDs, bad query (400 / 0xC000 / 0xA900)
    NOT_FOUND = "not-found"  # 404 / no match
    FORBIDDEN = "forbidden"  # 403 / 0x0124 not authorised
    CONFLICT = "conflict"  # 409: the instance belongs to another study/series
    TOO_LARGE = "too-large"  # 413 / 0xA700 out of resources
    UNAVAILABLE = "unavailable"  # 503: storage failed; nothing acknowledged


class ImagingError(Exception):
    """A request the imaging store refuses; the message names what is wrong."""

    def __init__(self, kind: Kind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
