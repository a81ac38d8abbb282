"""What the raw pixels' meta says to measure and orient a frame (app/viewer/geometry.py), on the real headers of
tests/fixtures/dicom: spacing from PixelSpacing (or ImagerPixelSpacing, flagged), edge letters from
ImageOrientationPatient or PatientOrientation, units of the values after rescale."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
from pydicom.uid import generate_uid

from app.viewer import geometry
from tests.conftest import FIXTURES


def _header(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(FIXTURES / "dicom" / name)


@pytest.mark.parametrize(
    ("vector", "letters"),
    [
        ((1, 0, 0), "L"),
        ((-1, 0, 0), "R"),
        ((0, 1, 0), "P"),
        ((0, -1, 0), "A"),
        ((0, 0, 1), "H"),
        ((0, 0, -1), "F"),
        ((0.569486, 0.822001, 0.0), "PL"),  # MR2's oblique row: mostly posterior, then left
        ((0.0, -0.0, -1.0), "F"),  # a signed zero is no direction
        ((0.6, -0.48, 0.64), "HLA"),
    ],
)
def test_direction_letters_name_the_largest_component_first(vector, letters):
    assert geometry.direction_letters(vector) == letters


def test_an_axial_ct_reads_r_l_a_p_with_its_spacing_in_hu():
    ds = _header("bad_sequence.dcm")
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    found = geometry.frame_geometry(ds, modality="CT")
    assert found.spacing == (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])) == (0.287109375, 0.287109375)
    assert found.spacing_source == "PixelSpacing"
    # Rows run towards the patient's left, columns towards posterior: R at the left edge, A at the top.
    assert found.edges == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert found.units == "HU"


def test_a_flipped_ct_puts_posterior_at_the_top():
    ds = _header("explicit_VR-UN.dcm")
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, -1, 0]
    found = geometry.frame_geometry(ds, modality="CT")
    assert found.edges == {"top": "P", "bottom": "A", "left": "R", "right": "L"}
    assert found.spacing == (0.859375, 0.859375)


def test_an_oblique_mr_gets_two_letters_and_no_unit_for_an_unspecified_rescale():
    ds = _header("MR2_J2KI.dcm")
    assert ds.RescaleType == "US"  # "unspecified"
    found = geometry.frame_geometry(ds, modality="MR")
    assert found.edges == {"top": "H", "bottom": "F", "left": "AR", "right": "PL"}
    assert found.spacing == (0.195313, 0.195313)
    assert found.units == ""


def test_an_enhanced_ct_takes_spacing_and_orientation_from_its_functional_groups():
    ds = _header("eCT_Supplemental.dcm")
    assert "PixelSpacing" not in ds and "ImageOrientationPatient" not in ds
    shared = ds.SharedFunctionalGroupsSequence[0]
    per_frame = ds.PerFrameFunctionalGroupsSequence[0]
    groups = [g for g in (per_frame, shared) if "PixelMeasuresSequence" in g]
    spacing = [float(v) for v in groups[0].PixelMeasuresSequence[0].PixelSpacing]
    groups = [g for g in (per_frame, shared) if "PlaneOrientationSequence" in g]
    row = [float(v) for v in groups[0].PlaneOrientationSequence[0].ImageOrientationPatient][:3]
    found = geometry.frame_geometry(ds, modality="CT")
    assert found.spacing == tuple(spacing)
    assert found.edges is not None and found.edges["right"] == geometry.direction_letters(row)
    assert found.units == "HU"


def test_the_radiograph_has_patient_orientation_and_no_usable_spacing():
    ds = _header("RG1_J2KI.dcm")
    assert [float(v) for v in ds.PixelSpacing] == [0.0, 0.0] and "ImagerPixelSpacing" not in ds
    found = geometry.frame_geometry(ds, modality="CR")
    assert found.spacing is None  # a zero spacing measures nothing: the viewer says px
    assert list(ds.PatientOrientation) == ["L", "F"]
    assert found.edges == {"top": "H", "bottom": "F", "left": "R", "right": "L"}
    assert geometry.frame_geometry(_header("RG3_J2KI.dcm"), modality="CR").edges == {
        "top": "H",
        "bottom": "F",
        "left": "L",
        "right": "R",
    }


def test_imager_pixel_spacing_is_used_and_flagged_as_at_the_detector():
    ds = _header("RG1_J2KI.dcm")
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.168, 0.143]
    found = geometry.frame_geometry(ds, modality="CR")
    assert found.spacing == (0.168, 0.143) and found.spacing_source == "ImagerPixelSpacing"
    assert "detector" in found.meta()["spacing_note"]


def test_no_orientation_or_spacing_when_the_header_has_none():
    found = geometry.frame_geometry(_header("emri_small.dcm"), modality="MR")
    assert found == geometry.Geometry()
    assert found.meta() == {
        "spacing": None,
        "spacing_source": None,
        "spacing_note": None,
        "orientation": None,
        "units": "",
    }
    nm = geometry.frame_geometry(_header("JPEG-LL.dcm"), modality="NM")  # PatientOrientation present but empty
    assert nm.edges is None and nm.spacing == (2.26, 2.26)


def test_the_pixels_route_sends_spacing_orientation_and_units(app_client, auth_headers):
    ds = _header("bad_sequence.dcm")
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    upload = app_client.post(
        "/api/studies", files={"files": ("ct.dcm", buffer.getvalue())}, headers=auth_headers("coordinator")
    )
    assert upload.status_code == 201, upload.text
    instance_id = upload.json()["instances"][0]["id"]
    headers = auth_headers("reader")
    for query in ("", "?encoding=up-zigzag-shuffle-deflate"):
        response = app_client.get(f"/api/instances/{instance_id}/pixels{query}", headers=headers)
        assert response.status_code == 200, response.text
        meta = json.loads(response.headers["x-lumen-meta"])
        assert meta["spacing"] == [0.287109375, 0.287109375] and meta["spacing_source"] == "PixelSpacing"
        assert meta["orientation"] == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
        assert meta["units"] == "HU"
