"""Read what the store needs from a DICOM file without decoding its pixel data.

The header is parsed with pydicom up to (not including) Pixel Data; the file bytes are stored
as received, so the pixel data a peer retrieves is byte-identical to what was sent. The
header becomes DICOM JSON (PS3.18 F.2) without bulk data; it is sealed before storage and
only ever leaves the server through WADO-RS metadata, QIDO-RS and C-FIND.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from hdsvault.imaging.attributes import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS
from hdsvault.imaging.errors import ImagingError, Kind

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_KEY_TAGS = tuple(sorted({int(t, 16) for t in (*STUDY_KEYS, *SERIES_KEYS, *INSTANCE_KEYS)}))
"""What :func:`parse` reads and keeps: the key attributes (QIDO/C-FIND return and match on
them; UIDs included). Why not the whole header: pydicom converts each element it keeps (tens
of µs each) and a CT header has a few hundred; the others are only stepped over here.
WADO-RS metadata converts the full header from the stored file when asked (:func:`full_json`)."""
BULK_THRESHOLD = 1024
Json = dict[str, Any]


@dataclass(frozen=True)
class ParsedInstance:
    """An instance's identity and header (DICOM JSON), its bytes untouched."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    header: Json  # the study, series and instance key attributes (the index's sealed meta)
    data: bytes  # the DICOM file (Part 10), as received

    def level(self, keys: tuple[str, ...]) -> Json:
        return {t: self.header[t] for t in keys if t in self.header}

    @property
    def study(self) -> Json:
        return self.level(STUDY_KEYS)

    @property
    def series(self) -> Json:
        return self.level(SERIES_KEYS)


def check_uid(value: object, what: str) -> str:
    text = str(value or "").strip().rstrip("\x00")
    if not text or len(text) > 64 or not UID_PATTERN.match(text):
        raise ImagingError(Kind.INVALID, f"{what} is missing or not a valid UID")
    return text


def parse(data: bytes) -> ParsedInstance:
    """Parse a DICOM Part 10 file (preamble, ``DICM``, file meta); INVALID if it is not one."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise ImagingError(
            Kind.INVALID, "not a DICOM Part 10 file (no 128-byte preamble followed by 'DICM')"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(
                io.BytesIO(data), stop_before_pixels=True, specific_tags=list(_KEY_TAGS)
            )
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError, OverflowError) as exc:
        raise ImagingError(Kind.INVALID, f"unreadable DICOM header: {exc}"[:300]) from None
    except Exception as exc:  # pydicom raises a zoo of errors on corrupt input
        raise ImagingError(Kind.INVALID, f"unreadable DICOM header: {type(exc).__name__}") from None
    meta: FileMetaDataset = ds.file_meta
    ts = check_uid(meta.get("TransferSyntaxUID"), "Transfer Syntax UID (0002,0010)")
    sop_class = check_uid(
        ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID"), "SOP Class UID (0008,0016)"
    )
    sop_uid = check_uid(ds.get("SOPInstanceUID"), "SOP Instance UID (0008,0018)")
    meta_uid = meta.get("MediaStorageSOPInstanceUID")
    if meta_uid and str(meta_uid).strip() != sop_uid:
        raise ImagingError(
            Kind.INVALID, "Media Storage SOP Instance UID differs from SOP Instance UID"
        )
    study_uid = check_uid(ds.get("StudyInstanceUID"), "Study Instance UID (0020,000D)")
    series_uid = check_uid(ds.get("SeriesInstanceUID"), "Series Instance UID (0020,000E)")
    return ParsedInstance(study_uid, series_uid, sop_uid, sop_class, ts, key_json(ds), data)


_SPLIT_STRIPPED = frozenset({"CS", "UI", "DA", "TM", "DT", "AS"})
"""VRs pydicom reads by stripping trailing spaces and NULs, then splitting on backslashes
(``values.convert_string``; dates and times too, ``datetime_conversion`` being off)."""
_SPLIT_EACH_STRIPPED = frozenset({"SH", "LO"})
"""VRs pydicom reads by splitting on backslashes, then stripping each value
(``values.convert_text``)."""
_CHARSET = 0x00080005
_IMPLICIT_VR = {t: str(dictionary_VR(t)) for t in _KEY_TAGS}
_INTEGER = re.compile(r" *[+-]?[0-9]{1,11} *")


def key_json(ds: Dataset) -> Json:
    """DICOM JSON of the key attributes :func:`parse` kept, as :func:`header_json` makes it.

    Why: pydicom's value conversion and JSON rendering cost tens of µs per element, most of
    the CPU of a C-STORE. Plain values (codes, UIDs, dates, short ASCII texts, integer
    strings, unsigned shorts) are rendered here straight from the raw bytes, with pydicom's
    own rules (in implicit VR, with the VR of its dictionary); the others (person names,
    decimals, sequences, any non-ASCII or escaped text) go through pydicom.
    ``tests/imaging/test_dicomfile.py`` checks both give the same JSON.
    """
    plain: dict[str, Json | None] = {}
    rest = Dataset()  # unconverted, so that header_json drops what pydicom finds invalid
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        attr = _plain_json(raw) if isinstance(raw, RawDataElement) else None
        plain[f"{int(tag):08X}"] = attr
        if attr is None:
            rest[tag] = raw
    if len(rest) and (charset := ds.get_item(_CHARSET)) is not None:
        rest[_CHARSET] = charset  # texts are decoded with the data set's character set
    converted = header_json(rest) if len(rest) else {}
    out: Json = {}
    for key, attr in plain.items():
        if attr is not None:
            out[key] = attr
        elif key in converted:
            out[key] = converted[key]
    return out


def _plain_json(raw: RawDataElement) -> Json | None:
    vr = raw.VR or _IMPLICIT_VR.get(int(raw.tag))  # implicit VR: the dictionary's, as pydicom
    value = raw.value
    if vr is None or not isinstance(value, bytes):
        return None
    if vr == "US":
        if not raw.is_little_endian or len(value) % 2:
            return None
        numbers = list(struct.unpack(f"<{len(value) // 2}H", value))
        return {"vr": vr, "Value": numbers} if numbers else {"vr": vr}
    if not value.isascii() or b"\x1b" in value:
        return None
    if vr == "IS":  # JSON numbers; anything but plain integers is left to pydicom
        texts = value.decode("ascii").rstrip(" \x00").split("\\")
        if texts == [""]:
            return {"vr": vr}
        if not all(_INTEGER.fullmatch(t) for t in texts):
            return None
        return {"vr": vr, "Value": [int(t) for t in texts]}
    if vr in _SPLIT_STRIPPED:
        items = value.decode("ascii").rstrip(" \x00").split("\\")
    elif vr in _SPLIT_EACH_STRIPPED:
        items = [v.rstrip("\x00 ") for v in value.decode("ascii").split("\\")]
    else:
        return None
    return {"vr": vr} if items == [""] else {"vr": vr, "Value": items}


def full_json(data: bytes) -> Json:
    """DICOM JSON of every attribute of a stored file but bulk data (WADO-RS metadata)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return header_json(ds)


def header_json(ds: Dataset) -> Json:
    """DICOM JSON of ``ds`` without bulk data and without invalid values (never a crash)."""

    def bulk(_elem: Any) -> str:
        return "bulk"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out: Json = ds.to_json_dict(BULK_THRESHOLD, bulk, suppress_invalid_tags=True)
        except Exception:
            out = {}
            for elem in ds:
                try:
                    one = Dataset()
                    one.add(elem)
                    out.update(one.to_json_dict(BULK_THRESHOLD, bulk, suppress_invalid_tags=True))
                except Exception:  # noqa: S112 - an unreadable element is left out
                    continue
    return _strip_bulk(out)


def _strip_bulk(obj: Json) -> Json:
    clean: Json = {}
    for tag, attr in obj.items():
        if not isinstance(attr, dict) or "BulkDataURI" in attr or tag.startswith("0002"):
            continue
        if attr.get("vr") == "SQ" and isinstance(attr.get("Value"), list):
            attr = {**attr, "Value": [_strip_bulk(i) for i in attr["Value"] if isinstance(i, dict)]}
        clean[tag] = attr
    return clean


def first_value(attrs: Json, tag: str) -> str | None:
    """The first value of ``tag`` as text (a person name: its alphabetic form)."""
    attr = attrs.get(tag)
    if not isinstance(attr, dict):
        return None
    values = attr.get("Value")
    if not values:
        return None
    v = values[0]
    if isinstance(v, dict):
        v = v.get("Alphabetic")
    return None if v is None else str(v)


def all_values(attrs: Json, tag: str) -> list[str]:
    attr = attrs.get(tag)
    if not isinstance(attr, dict):
        return []
    out = []
    for v in attr.get("Value") or []:
        if isinstance(v, dict):
            v = v.get("Alphabetic")
        if v is not None:
            out.append(str(v))
    return out


def to_dataset(attrs: Json) -> Dataset:
    """A pydicom Dataset from DICOM JSON (C-FIND responses)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Dataset.from_json(attrs)


def load(data: bytes) -> Dataset:
    """The whole file as a Dataset (pixel data kept encoded, as bytes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def is_uid(value: str) -> bool:
    return bool(UID_PATTERN.match(value)) and len(value) <= 64


__all__ = ["UID", "ParsedInstance", "parse"]
