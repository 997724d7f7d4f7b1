"""Key-attribute JSON rendered from raw bytes equals pydicom's, on every pydicom test file."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

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


def _same(data: bytes) -> None:
    try:
        fast = dicomfile.key_json(_read(data))
    except Exception:  # a file pydicom cannot read at all is not what this test is about
        pytest.skip("unreadable")
    assert fast == dicomfile.header_json(_read(data))


def _corpus() -> list[Path]:
    """pydicom's bundled test files (no download): odd charsets, implicit VR, big endian..."""
    root = Path(pydicom.data.__file__).parent / "test_files"
    return sorted(p for p in root.rglob("*.dcm") if p.stat().st_size < 5_000_000)


def test_matches_pydicom_on_its_test_files() -> None:
    checked = 0
    for path in _corpus():
        data = path.read_bytes()
        try:
            ds = _read(data)
            expected = dicomfile.header_json(_read(data))
        except Exception:  # files pydicom itself cannot read
            continue
        assert dicomfile.key_json(ds) == expected, path
        checked += 1
    assert checked > 50


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
    ],
)
def test_matches_pydicom_on_edge_values(attrs: dict[str, object]) -> None:
    _same(_file(**attrs))


def test_matches_pydicom_in_implicit_vr() -> None:
    """Peers (dcmtk's storescu among them) often send Implicit VR Little Endian."""
    ds = pydicom.dcmread(str(pydicom.data.get_testdata_file("CT_small.dcm")))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert _read(out.getvalue()).get_item(0x00080060).VR is None  # really implicit
    _same(out.getvalue())
