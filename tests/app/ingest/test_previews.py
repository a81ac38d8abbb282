"""The preview made at ingest: stored beside the file, small, same aspect, windowed like the viewer's default."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from app.ingest import pixels, previews
from app.storage import get_blob_store
from tests.conftest import FIXTURES
from tests.e2e.helpers import DEMO, fresh_dicom, fresh_jpeg


def _upload(app_client, headers, name: str, data: bytes) -> dict:
    response = app_client.post("/api/studies", files={"files": (name, data)}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["instances"][0]


def _stored(data: bytes) -> Image.Image:
    png = previews.stored_preview(sha256=hashlib.sha256(data).hexdigest())
    assert png is not None, "no preview stored at ingest"
    return Image.open(io.BytesIO(png))


def test_radiograph_preview_is_stored_at_ingest(app_client, auth_headers):
    """The real 1841 x 1955 JPEG 2000 chest radiograph (MONOCHROME1): a 482 x 512 8-bit preview, inverted."""
    data = fresh_dicom(FIXTURES / "dicom" / "RG1_J2KI.dcm")
    instance = _upload(app_client, auth_headers("coordinator"), "rg1.dcm", data)
    key = previews.preview_key(sha256=hashlib.sha256(data).hexdigest())
    assert key.endswith("-preview")
    preview = _stored(data)
    assert preview.mode == "L" and max(preview.size) == previews.PREVIEW_SIZE
    columns, rows = instance["columns"], instance["rows"]
    assert preview.size == (round(columns * previews.PREVIEW_SIZE / rows), previews.PREVIEW_SIZE)
    # The same picture as the full rendering, downscaled: compare with a downscaled display of the decoded file.
    raw = pixels.load_frame(data, "dicom")
    center, width = pixels.header_window(pixels.read_dicom(data, stop_before_pixels=True))
    full = Image.fromarray(pixels.to_display(raw, photometric="MONOCHROME1", window_center=center, window_width=width))
    expected = np.asarray(full.resize(preview.size, Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(np.asarray(preview, dtype=np.float32) - expected).mean() < 3


@pytest.mark.parametrize(
    ("name", "make", "mode"),
    [
        ("fundus.jpg", lambda: fresh_jpeg(DEMO / "IDRiD_02.jpg", max_side=1024), "RGB"),
        ("mr.dcm", lambda: fresh_dicom(FIXTURES / "dicom" / "emri_small.dcm"), "L"),  # 64 x 64, 10 frames
    ],
    ids=["colour-photograph", "small-multiframe"],
)
def test_preview_keeps_aspect_and_never_upscales(app_client, auth_headers, name, make, mode):
    data = make()
    instance = _upload(app_client, auth_headers("coordinator"), name, data)
    preview = _stored(data)
    columns, rows = instance["columns"], instance["rows"]
    assert preview.mode == mode
    assert max(preview.size) == min(previews.PREVIEW_SIZE, max(columns, rows))
    assert abs(preview.size[0] / preview.size[1] - columns / rows) < 0.01


def test_a_duplicate_upload_fills_in_a_missing_preview(app_client, auth_headers):
    """A file stored before previews were made at ingest gets one when it is uploaded again."""
    data = fresh_dicom(FIXTURES / "dicom" / "emri_small.dcm")
    headers = auth_headers("coordinator")
    _upload(app_client, headers, "mr.dcm", data)
    sha256 = hashlib.sha256(data).hexdigest()
    get_blob_store().delete(previews.preview_key(sha256=sha256))
    assert previews.stored_preview(sha256=sha256) is None
    again = app_client.post("/api/studies", files={"files": ("mr.dcm", data)}, headers=headers)
    assert again.status_code == 201 and again.json()["instances"][0]["duplicate"], again.text
    assert _stored(data).size == (64, 64)
