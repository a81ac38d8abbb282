"""The viewer's image.png and the raw pixels the browser windows follow the file's VOI as pydicom applies it: a VOI
LUT Sequence (its grey levels travel after the pixels) and a header's VOI LUT Function (named in the preset)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from tests.conftest import FIXTURES
from tests.voi import pydicom_display, with_bent_lut

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _fresh(ds: pydicom.Dataset) -> bytes:
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _upload(app_client, auth_headers, data: bytes) -> int:
    response = app_client.post("/api/studies", files={"files": ("voi.dcm", data)}, headers=auth_headers("coordinator"))
    assert response.status_code == 201, response.text
    return response.json()["instances"][0]["id"]


def _views(app_client, auth_headers, instance_id: int) -> tuple[np.ndarray, np.ndarray, dict, bytes]:
    """The full display PNG, the preview, and the raw pixels' meta and body."""
    headers = auth_headers("reader")
    full = app_client.get(f"/api/instances/{instance_id}/image.png", headers=headers)
    preview = app_client.get(f"/api/instances/{instance_id}/image.png?max_size=512", headers=headers)
    raw = app_client.get(f"/api/instances/{instance_id}/pixels", headers=headers)
    assert full.status_code == preview.status_code == raw.status_code == 200
    image = np.asarray(Image.open(io.BytesIO(full.content)))
    small = np.asarray(Image.open(io.BytesIO(preview.content)))
    return image, small, json.loads(raw.headers["x-lumen-meta"]), raw.content


def test_a_voi_lut_sequence_is_shown_and_sent_to_the_browser(app_client, auth_headers):
    ds = with_bent_lut(pydicom.dcmread(FIXTURES / "dicom" / "vlut_04.dcm"))
    expected = pydicom_display(ds)
    image, preview, meta, body = _views(app_client, auth_headers, _upload(app_client, auth_headers, _fresh(ds)))
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(preview, expected)  # 512 px: the preview made at ingest is the full rendering
    # The browser gets the LUT as grey levels per stored value, after the pixels; its first preset uses them.
    first = meta["presets"][0]
    assert first["name"] == "VOI LUT" and first["key"] == 1
    pixels_size = meta["rows"] * meta["columns"] * 2
    assert first["table"] == pixels_size and len(body) == pixels_size + meta["stored_max"] + 1
    stored = np.frombuffer(body[:pixels_size], dtype="<u2").reshape(meta["rows"], meta["columns"])
    levels = np.frombuffer(body, dtype=np.uint8, offset=first["table"])
    np.testing.assert_array_equal(levels[stored], expected)  # what viewer.js paints
    assert all("table" not in preset for preset in meta["presets"][1:])


@pytest.mark.parametrize("function", ["SIGMOID", "LINEAR_EXACT", None])
def test_the_headers_voi_lut_function_is_shown_and_named_to_the_browser(app_client, auth_headers, function):
    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")  # Window Center 600, Width 1600
    if function:
        ds.VOILUTFunction = function
    image, preview, meta, body = _views(app_client, auth_headers, _upload(app_client, auth_headers, _fresh(ds)))
    np.testing.assert_array_equal(image, pydicom_display(ds))
    np.testing.assert_array_equal(preview, pydicom_display(ds))
    header = {"key": 1, "name": "Header", "center": 600.0, "width": 1600.0}
    assert meta["presets"][0] == ({**header, "function": function} if function else header)  # LINEAR: none named
    assert len(body) == meta["rows"] * meta["columns"] * 2
    assert {preset.get("function") for preset in meta["presets"][1:]} == {"LINEAR_EXACT"}  # auto, full range
