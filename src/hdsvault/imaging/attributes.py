"""Which DICOM attributes belong to which query level, and the QIDO-RS default return keys.

Levels follow the Study Root information model (PS3.4 C.6.2): patient attributes are
returned with the study. The tables are PS3.18 6.7.1.2 (required QIDO-RS return keys) plus
the attributes commonly asked by PACS and viewers (Orthanc, OHIF, Weasis).
"""

from __future__ import annotations

from enum import StrEnum

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword


class Level(StrEnum):
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


def _tags(*keywords: str) -> tuple[str, ...]:
    out = []
    for k in keywords:
        tag = tag_for_keyword(k)
        assert tag is not None, k
        out.append(f"{tag:08X}")
    return tuple(out)


PATIENT_KEYS = _tags(
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientAge",
)
STUDY_KEYS = (
    *_tags(
        "SpecificCharacterSet",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "InstitutionName",
    ),
    *PATIENT_KEYS,
)
SERIES_KEYS = _tags(
    "SpecificCharacterSet",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesInstanceUID",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "Laterality",
    "ProtocolName",
    "StationName",
)
INSTANCE_KEYS = _tags(
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "ContentDate",
    "ContentTime",
    "AcquisitionNumber",
    "ImageType",
)
COMPUTED_STUDY = _tags(
    "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"
)
COMPUTED_SERIES = _tags("NumberOfSeriesRelatedInstances")
UIDS = {
    Level.STUDY: f"{tag_for_keyword('StudyInstanceUID'):08X}",
    Level.SERIES: f"{tag_for_keyword('SeriesInstanceUID'):08X}",
    Level.IMAGE: f"{tag_for_keyword('SOPInstanceUID'):08X}",
}
STUDY_UID, SERIES_UID, SOP_UID = UIDS[Level.STUDY], UIDS[Level.SERIES], UIDS[Level.IMAGE]
SOP_CLASS = f"{tag_for_keyword('SOPClassUID'):08X}"
MODALITY = f"{tag_for_keyword('Modality'):08X}"
MODALITIES_IN_STUDY = f"{tag_for_keyword('ModalitiesInStudy'):08X}"
RETRIEVE_URL = f"{tag_for_keyword('RetrieveURL'):08X}"
AVAILABILITY = f"{tag_for_keyword('InstanceAvailability'):08X}"
QR_LEVEL = f"{tag_for_keyword('QueryRetrieveLevel'):08X}"

DEFAULT_RETURN: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (*STUDY_KEYS, *COMPUTED_STUDY, AVAILABILITY),
    Level.SERIES: (*SERIES_KEYS, *COMPUTED_SERIES, AVAILABILITY),
    Level.IMAGE: (*INSTANCE_KEYS, AVAILABILITY),
}
"""QIDO-RS returns these at each level (PS3.18 table 6.7.1-2), plus what the query names."""

LEVEL_OF: dict[str, Level] = {}
for _t in STUDY_KEYS + COMPUTED_STUDY:
    LEVEL_OF.setdefault(_t, Level.STUDY)
for _t in SERIES_KEYS + COMPUTED_SERIES:
    LEVEL_OF.setdefault(_t, Level.SERIES)
LEVEL_OF["00080005"] = Level.STUDY


def level_of(tag: str) -> Level:
    """The level an attribute is matched at (unknown attributes: the instance)."""
    return LEVEL_OF.get(tag, Level.IMAGE)


def parse_attribute(name: str) -> str:
    """``PatientName`` or ``00100010`` -> ``"00100010"``; ValueError if neither."""
    name = name.strip()
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return name.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise ValueError(f"unknown DICOM attribute {name[:64]!r}")
    return f"{tag:08X}"


def vr_of(tag: str) -> str:
    try:
        return str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return "UN"


def keyword_of(tag: str) -> str:
    return keyword_for_tag(int(tag, 16)) or tag
