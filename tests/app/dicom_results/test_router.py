"""GET /api/predictions/{id}/dicom: a zip for the roles that see identity, audited as an export."""

from __future__ import annotations

import io
import zipfile

import highdicom as hd
import pydicom
from sqlalchemy import select

from app.db import session_scope
from app.tables import AuditEvent
from tests.app.dicom_results.conftest import StoredPrediction, store_png_prediction


def test_a_coordinator_downloads_the_objects_and_the_export_is_audited(
    app_client, make_user, chest_prediction: StoredPrediction
) -> None:
    user, token = make_user("coordinator")
    response = app_client.get(f"/api/predictions/{chest_prediction.prediction_id}/dicom",
                              headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f"prediction-{chest_prediction.prediction_id}-dicom.zip" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        files = {name: pydicom.dcmread(io.BytesIO(archive.read(name))) for name in names}
    assert names == ["01-report.dcm", "02-overlay.dcm", "03-map-gradcam.dcm", "04-map-integrated_gradients.dcm"]
    assert isinstance(hd.sr.Comprehensive3DSR.from_dataset(files["01-report.dcm"]), hd.sr.Comprehensive3DSR)
    assert hd.pm.ParametricMap.from_dataset(files["04-map-integrated_gradients.dcm"]).pixel_array.size == (
        chest_prediction.source.Rows * chest_prediction.source.Columns
    )
    assert {d.StudyInstanceUID for d in files.values()} == {chest_prediction.source.StudyInstanceUID}
    with session_scope(writes=False) as session:
        events = session.scalars(select(AuditEvent).where(
            AuditEvent.user_id == user.id, AuditEvent.action == "export", AuditEvent.object_type == "prediction",
        )).all()
    assert [(e.object_id, e.detail["format"], e.detail["objects"]) for e in events] == [
        (str(chest_prediction.prediction_id), "dicom", 4)
    ]


def test_a_reader_is_refused_because_the_objects_carry_identity(
    app_client, auth_headers, chest_prediction: StoredPrediction
) -> None:
    url = f"/api/predictions/{chest_prediction.prediction_id}/dicom"
    response = app_client.get(url, headers=auth_headers("reader"))
    assert response.status_code == 403
    assert "patient's identity" in response.json()["detail"]


def test_a_png_uploads_prediction_is_422_with_the_reason(app_client, auth_headers) -> None:
    response = app_client.get(f"/api/predictions/{store_png_prediction()}/dicom", headers=auth_headers("admin"))
    assert response.status_code == 422
    assert "uploaded as PNG, not DICOM" in response.json()["detail"]


def test_an_unknown_prediction_is_404_and_an_anonymous_caller_401(app_client, auth_headers) -> None:
    assert app_client.get("/api/predictions/2147483000/dicom", headers=auth_headers("admin")).status_code == 404
    assert app_client.get("/api/predictions/2147483000/dicom").status_code == 401
