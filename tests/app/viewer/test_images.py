"""GET /api/instances/{id}/image.png and GET /api/heatmaps/{id}.png."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from app.ingest import pixels as ingest_pixels
from app.ingest import previews as ingest_previews
from app.tables import JobState
from app.viewer import colormaps
from app.viewer import frames as viewer_frames
from app.viewer.images import colorize
from tests.app.viewer import factories
from tests.conftest import FIXTURES
from tests.e2e.helpers import fresh_dicom


def _png(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def test_uploaded_dicom_renders(app_client, auth_headers):
    """A real JPEG 2000 chest radiograph (MONOCHROME1) through the real upload, then rendered."""
    data = fresh_dicom(FIXTURES / "dicom" / "RG1_J2KI.dcm")
    admin = auth_headers("admin")
    upload = app_client.post(
        "/api/studies", files={"files": ("RG1_J2KI.dcm", data, "application/dicom")}, headers=admin
    )
    assert upload.status_code == 201, upload.text
    instance = upload.json()["instances"][0]
    reader = auth_headers("reader")
    image = _png(app_client.get(f"/api/instances/{instance['id']}/image.png", headers=reader))
    assert image.size == (instance["columns"], instance["rows"])
    assert image.mode == "L"
    pixels = np.asarray(image)
    assert int(pixels.max()) - int(pixels.min()) > 150 and pixels.std() > 20  # windowed: a real picture
    preview = _png(app_client.get(f"/api/instances/{instance['id']}/image.png?max_size=256", headers=reader))
    assert max(preview.size) == 256


def _no_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the file was decoded again")

    monkeypatch.setattr(viewer_frames, "decoded_frame", refuse)
    monkeypatch.setattr(ingest_pixels, "load_frame", refuse)
    monkeypatch.setattr(ingest_pixels, "decode_frame", refuse)


def test_preview_and_thumbnails_are_served_without_decoding(app_client, auth_headers, monkeypatch):
    """After ingest, image.png?max_size<=512 of frame 0 reads the stored preview; larger sizes still decode."""
    data = fresh_dicom(FIXTURES / "dicom" / "RG1_J2KI.dcm")
    upload = app_client.post("/api/studies", files={"files": ("rg1.dcm", data)}, headers=auth_headers("coordinator"))
    assert upload.status_code == 201, upload.text
    url = f"/api/instances/{upload.json()['instances'][0]['id']}/image.png"
    reader = auth_headers("reader")
    viewer_frames.clear_cache()
    _no_decoding(monkeypatch)
    response = app_client.get(f"{url}?max_size=512", headers=reader)
    assert response.content == ingest_previews.stored_preview(sha256=hashlib.sha256(data).hexdigest())
    assert _png(response).size == (482, 512)
    assert response.headers["etag"].endswith('-p"')
    assert _png(app_client.get(f"{url}?max_size=96", headers=reader)).size == (90, 96)
    monkeypatch.undo()
    assert _png(app_client.get(f"{url}?max_size=1024", headers=reader)).size == (964, 1024)


def test_a_full_rendering_is_made_once_then_read_back(app_client, auth_headers, monkeypatch):
    """The full-size PNG is rendered on the first request and kept as a derived blob; later requests (another
    reader, another process) read it without decoding the file again."""
    data = fresh_dicom(FIXTURES / "dicom" / "RG1_J2KI.dcm")
    upload = app_client.post("/api/studies", files={"files": ("rg1.dcm", data)}, headers=auth_headers("coordinator"))
    assert upload.status_code == 201, upload.text
    url = f"/api/instances/{upload.json()['instances'][0]['id']}/image.png"
    first = app_client.get(url, headers=auth_headers("reader"))
    assert _png(first).size == (1841, 1955)
    viewer_frames.clear_cache()
    _no_decoding(monkeypatch)
    again = app_client.get(url, headers=auth_headers("reader"))
    assert again.content == first.content


def test_preview_of_an_instance_stored_before_previews_is_made_once(app_client, auth_headers, db_session, monkeypatch):
    """No preview in the blob store (stored before this change): rendered on first request, then kept."""
    data = fresh_dicom(FIXTURES / "dicom" / "emri_small.dcm")
    stored = factories.insert_study(db_session, data=data, source_format="dicom", rows=64, columns=64, frames=10,
                                    modality="MR")
    db_session.commit()
    sha256 = hashlib.sha256(data).hexdigest()
    assert ingest_previews.stored_preview(sha256=sha256) is None
    url = f"/api/instances/{stored.instance_id}/image.png?max_size=512"
    headers = auth_headers("reader")
    first = app_client.get(url, headers=headers)
    assert _png(first).size == (64, 64)
    assert ingest_previews.stored_preview(sha256=sha256) == first.content
    viewer_frames.clear_cache()
    _no_decoding(monkeypatch)
    assert app_client.get(url, headers=headers).content == first.content


def test_stored_instance_png_with_cache_headers(app_client, auth_headers, db_session):
    data, header = factories.ct_small()
    stored = factories.insert_study(
        db_session, data=data, source_format="dicom", rows=header.Rows, columns=header.Columns, modality="CT"
    )
    db_session.commit()
    headers = auth_headers("reader")
    url = f"/api/instances/{stored.instance_id}/image.png"
    response = app_client.get(url, headers=headers)
    assert _png(response).size == (128, 128)
    assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
    etag = response.headers["etag"]
    again = app_client.get(url, headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    small = app_client.get(f"{url}?max_size=32", headers=headers)
    assert _png(small).size == (32, 32)
    assert small.headers["etag"] != etag


def test_instance_png_errors(app_client, auth_headers, db_session):
    png = factories.png_bytes(width=40, height=30)
    stored = factories.insert_study(db_session, data=png, source_format="png", rows=30, columns=40)
    db_session.commit()
    url = f"/api/instances/{stored.instance_id}/image.png"
    assert app_client.get(url).status_code == 401
    headers = auth_headers("reader")
    assert _png(app_client.get(url, headers=headers)).size == (40, 30)
    assert app_client.get(f"{url}?frame=1", headers=headers).status_code == 404
    assert app_client.get(f"{url}?max_size=1", headers=headers).status_code == 422
    assert app_client.get("/api/instances/999999/image.png", headers=headers).status_code == 404


def test_heatmap_png_colours_magnitude_for_display(app_client, auth_headers, db_session):
    stored = factories.done_study(db_session)
    job = factories.add_job(db_session, stored, state=JobState.done, progress=100)
    raw = np.zeros((8, 8), dtype=np.float16)
    raw[2, 3] = 4.0  # the peak
    raw[5, 5] = -2.0  # a negative attribution: half the peak's magnitude
    _, heatmap = factories.add_prediction(db_session, job, heatmap=raw)
    db_session.commit()
    headers = auth_headers("reader")
    response = app_client.get(f"/api/heatmaps/{heatmap.id}.png", headers=headers)
    image = _png(response)
    assert image.mode == "RGBA" and image.size == (8, 8)
    rgba = np.asarray(image)
    jet = colormaps.table("jet")
    assert tuple(rgba[2, 3]) == (*jet[255], 220) == (127, 0, 0, 220)  # matplotlib's jet at 1: (0.5, 0, 0)
    assert rgba[5, 5, 3] == 110 and tuple(rgba[5, 5, :3]) == tuple(jet[128])
    assert rgba[0, 0, 3] == 0
    assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert app_client.get("/api/heatmaps/999999.png", headers=headers).status_code == 404
    assert app_client.get(f"/api/heatmaps/{heatmap.id}.png").status_code == 401


def test_heatmap_of_a_volume_is_served_slice_by_slice(app_client, auth_headers, db_session):
    stored = factories.done_study(db_session)
    job = factories.add_job(db_session, stored, state=JobState.done, progress=100)
    _, heatmap = factories.add_prediction(db_session, job, heatmap=factories.blob_heatmap((1, 1, 3, 12, 10)))
    db_session.commit()
    headers = auth_headers("reader")
    assert _png(app_client.get(f"/api/heatmaps/{heatmap.id}.png?frame=2", headers=headers)).size == (10, 12)
    assert app_client.get(f"/api/heatmaps/{heatmap.id}.png?frame=3", headers=headers).status_code == 404


@pytest.mark.parametrize("value", [0.0, 1e-3])
def test_colorize_flat_maps(value):
    rgba = colorize(np.full((4, 4), value, dtype=np.float32))
    assert rgba.shape == (4, 4, 4) and rgba.dtype == np.uint8
    assert (rgba[..., 3] == (0 if value == 0 else 220)).all()
