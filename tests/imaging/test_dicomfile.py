"""The header reader and the key-attribute JSON it renders equal pydicom's, on every pydicom
test file and on edge values; the file meta built for a C-STORE equals pynetdicom's."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from hdsvault.imaging import dicomfile


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(
            io.BytesIO(data),
            stop_before_pixels=True,
            specific_tags=list(dicomfile._KEY_TAGS),
            force=True,
        )


def _same(data: bytes, *, fast: bool = True) -> None:
    """Both readers (ours, and pydicom's as the fallback) render what pydicom renders."""
    try:
        expected = dicomfile.header_json(_read(data))
    except Exception:  # a file pydicom cannot read at all is not what this test is about
        pytest.skip("unreadable")
    assert dicomfile.key_json(dicomfile._raw_elements(_read(data))) == expected
    if fast:
        _meta, elements = dicomfile._scan(data)
        assert dicomfile.key_json(elements) == expected


def _corpus() -> list[Path]:
    """pydicom's bundled test files (no download): odd charsets, implicit VR, big endian..."""
    root = Path(pydicom.data.__file__).parent / "test_files"
    return sorted(p for p in root.rglob("*.dcm") if p.stat().st_size < 5_000_000)


def test_matches_pydicom_on_its_test_files() -> None:
    checked = scanned = 0
    for path in _corpus():
        data = path.read_bytes()
        try:
            expected = dicomfile.header_json(_read(data))
        except Exception:  # files pydicom itself cannot read
            continue
        assert dicomfile.key_json(dicomfile._raw_elements(_read(data))) == expected, path
        checked += 1
        if data[128:132] != b"DICM":
            continue
        try:
            _meta, elements = dicomfile._scan(data)
        except dicomfile._Unusual:  # left to pydicom (big endian, deflated...)
            continue
        assert dicomfile.key_json(elements) == expected, path
        scanned += 1
    assert checked > 50
    assert scanned > 40


def _file(**attrs: object) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    for k, v in attrs.items():
        setattr(ds, k, v)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _ids(*values: str, undefined: bool = False) -> Sequence:
    items = []
    for v in values:
        item = Dataset()
        item.PatientID = v
        item.TypeOfPatientID = "TEXT"
        items.append(item)
    seq = Sequence(items)
    seq.is_undefined_length = undefined
    for item in items:
        item.is_undefined_length_sequence_item = undefined
    return seq


@pytest.mark.parametrize(
    "attrs",
    [
        {"ImageType": ["ORIGINAL", "", "AXIAL"], "Modality": "CT "},
        {"SeriesInstanceUID": "1.2.3\x00", "StudyDescription": " lead\\trail  \\"},
        {"SpecificCharacterSet": "ISO_IR 100", "InstitutionName": "Hôpital Lariboisière"},
        {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Éloïse^Dupont", "StudyID": ""},
        {"Rows": 512, "Columns": 512, "BitsAllocated": 16, "InstanceNumber": "7"},
        {"StudyDate": "20260101\\20260102", "PatientAge": "042Y"},
        {"SeriesNumber": "  -3 ", "AcquisitionNumber": "1\\2", "NumberOfFrames": "1.0"},
        {"InstanceNumber": "", "SeriesNumber": "+0012"},
        {"PatientName": "DUPONT^JEAN^^DR=ideo^x=phon", "ReferringPhysicianName": ""},
        {"PatientName": "A^B\\C^D", "ReferringPhysicianName": "  ^X "},
        {"PatientName": "A^B==", "ReferringPhysicianName": "=Y"},
        {"OtherPatientIDsSequence": _ids("ABC123", "456")},
        {"OtherPatientIDsSequence": _ids("ABC123", undefined=True)},
        {"OtherPatientIDsSequence": _ids()},
    ],
)
def test_matches_pydicom_on_edge_values(attrs: dict[str, object]) -> None:
    _same(_file(**attrs))


def test_steps_over_sequences_of_undefined_length() -> None:
    """Nested sequences and items of undefined length before the last key attribute."""
    inner = Dataset()
    inner.CodeValue = "X"
    inner.ConceptNameCodeSequence = _ids("nested", undefined=True)
    outer = Sequence([inner])
    outer.is_undefined_length = True
    inner.is_undefined_length_sequence_item = True
    data = _file(ProcedureCodeSequence=outer, PatientName="DOE^J", Rows=4)
    _same(data)
    assert dicomfile._scan(data)[1][0x00280010].value == b"\x04\x00"


def test_matches_pydicom_in_implicit_vr() -> None:
    """Peers (dcmtk's storescu among them) often send Implicit VR Little Endian."""
    ds = pydicom.dcmread(str(pydicom.data.get_testdata_file("CT_small.dcm")))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert _read(out.getvalue()).get_item(0x00080060).VR is None  # really implicit
    _same(out.getvalue())


def test_big_endian_goes_through_pydicom() -> None:
    data = Path(str(pydicom.data.get_testdata_file("MR_small_bigendian.dcm"))).read_bytes()
    with pytest.raises(dicomfile._Unusual):
        dicomfile._scan(data)
    parsed = dicomfile.parse(data)
    assert parsed.header == dicomfile.header_json(_read(data))
    assert parsed.sop_uid == str(_read(data).SOPInstanceUID)


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
@pytest.mark.parametrize("uid_length", [20, 21])  # even and odd: padding
def test_part10_equals_pynetdicom(ts: str, uid_length: int) -> None:
    sop_uid = ("1.2." + "3" * 60)[:uid_length]
    sop_class = "1.2.840.10008.5.1.4.1.1.2"
    meta = create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_uid, transfer_syntax=ts)
    expected = b"\x00" * 128 + b"DICM" + encode_file_meta(meta) + b"data"
    implementation = (str(PYNETDICOM_IMPLEMENTATION_UID), PYNETDICOM_IMPLEMENTATION_VERSION)
    assert dicomfile.part10(b"data", sop_class, sop_uid, ts, implementation) == expected


def test_parse_reads_the_identity() -> None:
    ds = pydicom.dcmread(str(pydicom.data.get_testdata_file("CT_small.dcm")))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    parsed = dicomfile.parse(out.getvalue())
    assert (parsed.study_uid, parsed.series_uid, parsed.sop_uid) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
    )
    assert parsed.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
