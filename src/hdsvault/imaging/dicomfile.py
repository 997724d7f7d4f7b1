"""Read what the store needs from a DICOM file without decoding its pixel data.

The key attributes of the header are read by a small reader of our own (:func:`_scan`; the
files it does not handle go through pydicom), which never reaches Pixel Data; the file bytes
are stored as received, so the pixel data a peer retrieves is byte-identical to what was sent.
The key attributes become DICOM JSON (PS3.18 F.2), exactly as pydicom renders them; that JSON
is sealed before storage and only ever leaves the server through QIDO-RS and C-FIND (WADO-RS
metadata renders the full header from the stored file).
"""

from __future__ import annotations

import functools
import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import UID

from hdsvault.imaging.attributes import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS
from hdsvault.imaging.errors import ImagingError, Kind

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_KEY_TAGS = tuple(sorted({int(t, 16) for t in (*STUDY_KEYS, *SERIES_KEYS, *INSTANCE_KEYS)}))
"""What :func:`parse` reads and keeps: the key attributes (QIDO/C-FIND return and match on
them; UIDs included). Why not the whole header: rendering an element costs tens of µs in
pydicom and a CT header has a few hundred; the others are only stepped over here.
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


def part10(
    dataset: bytes,
    sop_class: str,
    sop_uid: str,
    transfer_syntax: str,
    implementation: tuple[str, str],
) -> bytes:
    """A DICOM file (Part 10) from a data set received over DIMSE, byte for byte what
    pynetdicom's ``event.encoded_dataset(include_meta=True)`` returns.

    Why not that method: it builds the file meta as a pydicom data set and writes it through
    pydicom (~0.6 ms per C-STORE, a tenth of the CPU budget); here the seven elements are
    packed directly. ``implementation`` is (Implementation Class UID, Version Name).
    """
    meta = b"".join(
        (
            b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01",
            _meta_element(0x0002, "UI", sop_class),
            _meta_element(0x0003, "UI", sop_uid),
            _meta_element(0x0010, "UI", transfer_syntax),
            _meta_element(0x0012, "UI", implementation[0]),
            _meta_element(0x0013, "SH", implementation[1]),
        )
    )
    group_length = b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(meta))
    return b"".join((bytes(128), b"DICM", group_length, meta, dataset))


def _meta_element(elem: int, vr: str, value: str) -> bytes:
    raw = value.encode("ascii", "replace")  # not ASCII: not a UID either, parse() says so
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "
    return struct.pack("<HH2sH", 0x0002, elem, vr.encode(), len(raw)) + raw


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
        meta, elements = _scan(data)
    except _Unusual:
        meta, elements = _read_with_pydicom(data)
    ts = check_uid(_uid_text(meta.get(_TS)), "Transfer Syntax UID (0002,0010)")
    sop_class = check_uid(
        _uid_text(elements.get(_SOP_CLASS)) or _uid_text(meta.get(_MEDIA_CLASS)),
        "SOP Class UID (0008,0016)",
    )
    sop_uid = check_uid(_uid_text(elements.get(_SOP_INSTANCE)), "SOP Instance UID (0008,0018)")
    meta_uid = _uid_text(meta.get(_MEDIA_INSTANCE))
    if meta_uid and meta_uid.strip() != sop_uid:
        raise ImagingError(
            Kind.INVALID, "Media Storage SOP Instance UID differs from SOP Instance UID"
        )
    study_uid = check_uid(_uid_text(elements.get(_STUDY)), "Study Instance UID (0020,000D)")
    series_uid = check_uid(_uid_text(elements.get(_SERIES)), "Series Instance UID (0020,000E)")
    return ParsedInstance(study_uid, series_uid, sop_uid, sop_class, ts, key_json(elements), data)


_TS, _MEDIA_CLASS, _MEDIA_INSTANCE = 0x00020010, 0x00020002, 0x00020003
_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES = 0x00080016, 0x00080018, 0x0020000D, 0x0020000E
_KEY_SET = frozenset(_KEY_TAGS)
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TAG_LENGTH = struct.Struct("<HHI")
_TAG_VR_SHORT = struct.Struct("<HH2sH")
_TAG = struct.Struct("<II")  # the tag as one u32 (element in the high half), the length
_LONG = struct.Struct("<I")
_FAST_SYNTAXES = frozenset(
    str(uid)
    for uid in pydicom.uid.AllTransferSyntaxes
    if uid not in (pydicom.uid.ExplicitVRBigEndian, pydicom.uid.DeflatedExplicitVRLittleEndian)
)
"""Syntaxes :func:`_scan` reads itself: little endian, not deflated (all but two)."""
Elements = dict[int, RawDataElement | DataElement]
"""Elements by tag: raw (undecoded) as read, or already converted by pydicom."""


class _Unusual(Exception):
    """What :func:`_scan` leaves to pydicom: big endian or deflated data, a VR that is not one,
    elements out of order, a truncated file... (pydicom knows the workarounds)."""


def _scan(data: bytes) -> tuple[Elements, Elements]:
    """The file meta and the key attributes, as raw elements, read straight from the bytes.

    Why not pydicom: ``dcmread`` builds an object per element of the header, and that was
    the largest CPU cost of a C-STORE (~1 ms for a CT header); this steps over the elements
    it does not keep and stops after the last key attribute. The values are left raw, to be
    rendered by :func:`key_json` exactly as before.
    """
    try:
        meta, pos = _elements(data, 132, implicit=False, group2=True)
        ts = _uid_text(meta.get(_TS))
        if ts not in _FAST_SYNTAXES:
            raise _Unusual
        implicit = ts == pydicom.uid.ImplicitVRLittleEndian
        if implicit and data[pos + 4 : pos + 6] in _VRS:
            raise _Unusual  # explicit VR under an implicit syntax: pydicom's heuristics
        elements, _end = _elements(data, pos, implicit=implicit)
    except (struct.error, IndexError) as exc:
        raise _Unusual from exc
    return meta, elements


def _elements(
    data: bytes,
    pos: int,
    *,
    implicit: bool,
    group2: bool = False,
    wanted: frozenset[int] | None = _KEY_SET,
) -> tuple[Elements, int]:
    """Elements of one data set from ``pos``: group 2 only (``group2``), or those ``wanted``
    (all if None) up to the last of them; returns them and where reading stopped."""
    meta = group2
    last = max(wanted) if wanted and not meta else 0xFFFFFFFF
    out: Elements = {}
    size = len(data)
    previous = -1
    tag_length, long_length = _TAG.unpack_from, _LONG.unpack_from
    while pos + 8 <= size:
        tag, length = tag_length(data, pos)
        tag = (tag & 0xFFFF) << 16 | tag >> 16  # (group, element) read as one u32
        if (meta and tag >> 16 != 2) or tag > last:
            break
        if tag <= previous or tag >> 16 == 0xFFFE:
            raise _Unusual
        previous = tag
        start = pos + 8
        raw_vr = b""
        if not implicit:  # the u32 read as length is the VR and a u16 length
            raw_vr, length = data[pos + 4 : pos + 6], length >> 16
            if raw_vr in _LONG_VRS:
                (length,) = long_length(data, pos + 8)
                start = pos + 12
            elif raw_vr not in _VRS:
                raise _Unusual
        if length == _UNDEFINED:
            if meta or not (implicit or raw_vr in (b"SQ", b"UN")):
                raise _Unusual
            stop = _skip_items(data, start, implicit=implicit or raw_vr == b"UN")
            length = stop - 8 - start
        else:
            stop = start + length
            if stop > size:
                raise _Unusual
        if meta or wanted is None or tag in wanted:
            value = data[start : start + length]
            vr = raw_vr.decode() if raw_vr else None
            out[tag] = RawDataElement(BaseTag(tag), vr, length, value, start, implicit, True)
        pos = stop
    return out, pos


def _skip_items(data: bytes, pos: int, *, implicit: bool) -> int:
    """Past the delimiter of a sequence (or encapsulated data) of undefined length at ``pos``."""
    while True:
        group, elem, length = _TAG_LENGTH.unpack_from(data, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _Unusual
        pos = _skip_dataset(data, pos, implicit=implicit) if length == _UNDEFINED else pos + length
        if pos > len(data):
            raise _Unusual


def _skip_dataset(data: bytes, pos: int, *, implicit: bool) -> int:
    """Past the delimiter of an item of undefined length whose elements start at ``pos``."""
    while True:
        group, elem, length = _TAG_LENGTH.unpack_from(data, pos)
        if group << 16 | elem == _ITEM_END:
            return pos + 8
        start = pos + 8
        explicit_un = False
        if not implicit:
            _g, _e, raw_vr, length = _TAG_VR_SHORT.unpack_from(data, pos)
            if raw_vr not in _VRS:
                raise _Unusual
            if raw_vr in _LONG_VRS:
                (length,) = _LONG.unpack_from(data, pos + 8)
                start = pos + 12
            explicit_un = raw_vr == b"UN"
        if length == _UNDEFINED:
            pos = _skip_items(data, start, implicit=implicit or explicit_un)
        else:
            pos = start + length
        if pos > len(data):
            raise _Unusual


def _read_with_pydicom(data: bytes) -> tuple[Elements, Elements]:
    """:func:`_scan`'s result for the files it leaves aside, through pydicom."""
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
    return _raw_elements(meta), _raw_elements(ds)


def _raw_elements(ds: Dataset) -> Elements:
    items = ((int(tag), ds.get_item(tag)) for tag in list(ds.keys()))
    return {tag: item for tag, item in items if item is not None}


def _uid_text(elem: Any) -> str:
    """The text of a UID element, raw or converted ("" when absent)."""
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1").strip().rstrip("\x00")
    if value is None:
        return ""
    if not isinstance(value, str):  # several values: never a valid UID
        return "\\".join(str(v) for v in value)
    return value


_SPLIT_STRIPPED = frozenset({"CS", "UI", "DA", "TM", "DT", "AS"})
"""VRs pydicom reads by stripping trailing spaces and NULs, then splitting on backslashes
(``values.convert_string``; dates and times too, ``datetime_conversion`` being off)."""
_SPLIT_EACH_STRIPPED = frozenset({"SH", "LO"})
"""VRs pydicom reads by splitting on backslashes, then stripping each value
(``values.convert_text``)."""
_CHARSET = 0x00080005
_INTEGER = re.compile(r" *[+-]?[0-9]{1,11} *")


def key_json(elements: Elements) -> Json:
    """DICOM JSON of the key attributes :func:`parse` kept, as :func:`header_json` makes it.

    Why: pydicom's value conversion and JSON rendering cost tens of µs per element, most of
    the CPU of a C-STORE. Plain values (codes, UIDs, dates, short ASCII texts and person
    names, integer strings, unsigned shorts) are rendered here straight from the raw bytes,
    with pydicom's own rules (in implicit VR, with the VR of its dictionary); the others
    (decimals, sequences, any non-ASCII or escaped text) go through pydicom.
    ``tests/imaging/test_dicomfile.py`` checks both give the same JSON.
    """
    plain: dict[str, Json | None] = {}
    rest = Dataset()  # unconverted, so that header_json drops what pydicom finds invalid
    for tag, raw in sorted(elements.items()):
        attr = _plain_json(raw) if isinstance(raw, RawDataElement) else None
        plain[f"{tag:08X}"] = attr
        if attr is None:
            rest[tag] = raw
    if len(rest) and (charset := elements.get(_CHARSET)) is not None:
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
    vr = raw.VR or _implicit_vr(int(raw.tag))  # implicit VR: the dictionary's, as pydicom
    value = raw.value
    if vr is None or not isinstance(value, bytes):
        return None
    if vr == "SQ":
        return _sequence_json(raw)
    if vr == "US":
        if not raw.is_little_endian or len(value) % 2:
            return None
        numbers = list(struct.unpack(f"<{len(value) // 2}H", value))
        return {"vr": vr, "Value": numbers} if numbers else {"vr": vr}
    if not value.isascii() or b"\x1b" in value:
        return None
    if vr == "PN":  # pydicom: one trailing run stripped, values on "\\", groups on "="
        text = value.rstrip(b"\x00 ").decode("ascii")
        if not text:
            return {"vr": vr}
        return {"vr": vr, "Value": [_person_name(v) for v in text.split("\\")]}
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


@functools.cache
def _implicit_vr(tag: int) -> str | None:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return None
    return vr if len(vr) == 2 else None  # "US or SS"...: pydicom decides


def _sequence_json(raw: RawDataElement) -> Json | None:
    """A sequence whose items are of defined length and hold only plain values (e.g. Other
    Patient IDs); None otherwise (pydicom renders it)."""
    data = raw.value or b""
    items: list[Json] = []
    pos = 0
    try:
        while pos < len(data):
            group, elem, length = _TAG_LENGTH.unpack_from(data, pos)
            end = pos + 8 + length
            if group << 16 | elem != _ITEM or length == _UNDEFINED or end > len(data):
                return None
            elements, stop = _elements(
                data[pos + 8 : end], 0, implicit=raw.is_implicit_VR, wanted=None
            )
            if stop != length:
                return None
            item: Json = {}
            for tag, elem_raw in elements.items():
                attr = _plain_json(elem_raw) if isinstance(elem_raw, RawDataElement) else None
                if attr is None or tag >> 16 in (0x0002, 0xFFFE) or tag >> 16 & 1:
                    return None
                item[f"{tag:08X}"] = attr
            items.append(item)
            pos = end
    except (_Unusual, struct.error):
        return None
    return {"vr": "SQ", "Value": items} if items else None


def _person_name(value: str) -> Json:
    groups = value.split("=")
    out = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        out["Ideographic"] = groups[1]
    if len(groups) > 2:
        out["Phonetic"] = groups[2]
    return out


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
