"""GET /api/instances/{id}/pixels and GET /api/heatmaps/{id}/data: raw arrays that match the stored data."""

from __future__ import annotations

import json

import numpy as np

from app.ingest import pixels as ingest_pixels
from app.tables import JobState
from tests.app.reading.conftest import add_heatmap
from tests.app.viewer import factories
from tests.conftest import FIXTURES
from tests.e2e.helpers import fresh_dicom


def _raw(response) -> tuple[dict, bytes]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    return json.loads(response.headers["x-lumen-meta"]), response.content


def test_ct_pixels_are_modality_values_as_uint16(app_client, auth_headers, db_session):
    data, header = factories.ct_small()
    stored = factories.insert_study(
        db_session, data=data, source_format="dicom", rows=header.Rows, columns=header.Columns, modality="CT"
    )
    db_session.commit()
    headers = auth_headers("reader")
    url = f"/api/instances/{stored.instance_id}/pixels"
    meta, body = _raw(app_client.get(url, headers=headers))
    expected = ingest_pixels.load_frame(data, "dicom")  # Hounsfield units: slope/intercept applied
    stored_values = np.frombuffer(body, dtype="<u2").reshape(meta["rows"], meta["columns"])
    assert (meta["rows"], meta["columns"], meta["scale"]) == (128, 128, 1.0)
    np.testing.assert_array_equal(stored_values * meta["scale"] + meta["offset"], expected)
    assert meta["stored_max"] == int(stored_values.max()) and meta["photometric"] == "MONOCHROME2"
    names = [preset["name"] for preset in meta["presets"]]
    assert names[:2] == ["Auto (1-99%)", "Lung"] and "Mediastinum" in names and names[-1] == "Full range"
    assert [preset["key"] for preset in meta["presets"]] == list(range(1, len(names) + 1))
    etag = app_client.get(url, headers=headers).headers["etag"]
    again = app_client.get(url, headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304
    assert app_client.get(f"{url}?frame=1", headers=headers).status_code == 404
    assert app_client.get(url).status_code == 401
    assert app_client.get("/api/instances/999999/pixels", headers=headers).status_code == 404


def test_radiograph_pixels_keep_monochrome1_and_the_header_window(app_client, auth_headers):
    data = fresh_dicom(FIXTURES / "dicom" / "RG1_J2KI.dcm")
    upload = app_client.post("/api/studies", files={"files": ("rg1.dcm", data, "application/dicom")},
                             headers=auth_headers("admin"))
    assert upload.status_code == 201, upload.text
    instance = upload.json()["instances"][0]
    meta, body = _raw(app_client.get(f"/api/instances/{instance['id']}/pixels", headers=auth_headers("reader")))
    values = np.frombuffer(body, dtype="<u2").reshape(1955, 1841) * meta["scale"] + meta["offset"]
    np.testing.assert_array_equal(values, ingest_pixels.load_frame(data, "dicom"))
    assert meta["photometric"] == "MONOCHROME1"
    assert meta["presets"][0] == {"key": 1, "name": "Header", "center": 15000.0, "width": 30000.0}


def test_colour_images_are_not_served_raw(app_client, auth_headers, fundus_study):
    study = fundus_study()
    response = app_client.get(f"/api/instances/{study.instance_id}/pixels", headers=auth_headers("reader"))
    assert response.status_code == 422 and "colour image" in response.json()["detail"]


def test_heatmap_data_is_the_stored_float16(app_client, auth_headers, db_session):
    stored = factories.done_study(db_session)
    job = factories.add_job(db_session, stored, state=JobState.done, progress=100)
    prediction, _ = factories.add_prediction(db_session, job)
    signed = np.linspace(-1.5, 3.0, 12 * 20, dtype=np.float32).reshape(1, 1, 12, 20)
    heatmap = add_heatmap(db_session, prediction.id, method="integrated_gradients", array=signed)
    volume = add_heatmap(db_session, prediction.id, method="saliency",
                         array=np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5))
    db_session.commit()
    headers = auth_headers("reader")
    meta, body = _raw(app_client.get(f"/api/heatmaps/{heatmap.id}/data", headers=headers))
    assert meta["dtype"] == "float16" and meta["shape"] == [12, 20] and meta["signed"] is True
    assert meta["method"] == "integrated_gradients"
    assert (meta["value_min"], meta["value_max"]) == (-1.5, 3.0)
    np.testing.assert_array_equal(np.frombuffer(body, dtype="<f2").reshape(12, 20), signed[0, 0].astype(np.float16))
    assert body == heatmap.data  # the stored bytes, untouched
    meta, body = _raw(app_client.get(f"/api/heatmaps/{volume.id}/data?frame=2", headers=headers))
    assert meta["shape"] == [4, 5]
    np.testing.assert_array_equal(np.frombuffer(body, dtype="<f2"), np.arange(40, 60, dtype=np.float16))
    assert app_client.get(f"/api/heatmaps/{volume.id}/data?frame=3", headers=headers).status_code == 404
    assert app_client.get(f"/api/heatmaps/{heatmap.id}/data?frame=1", headers=headers).status_code == 404
    assert app_client.get("/api/heatmaps/999999/data", headers=headers).status_code == 404
