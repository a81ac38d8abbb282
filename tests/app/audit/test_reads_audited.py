"""API reads of patient data and submitted reads leave an audit row with the caller, the object and the client
address; a cine loop's later frames and a failed request leave none."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.tables import AuditEvent
from tests.app.viewer import factories
from tests.conftest import FIXTURES

CLIENT = "testclient"  # the peer address Starlette's TestClient sends


def _events(db_session, *, user_id: int, object_type: str, action: str = "view") -> list[AuditEvent]:
    query = select(AuditEvent).where(
        AuditEvent.user_id == user_id, AuditEvent.action == action, AuditEvent.object_type == object_type
    )
    return list(db_session.scalars(query.order_by(AuditEvent.id)))


def test_api_reads_of_patient_data_are_audited(app_client, make_user, db_session):
    done = factories.done_study(db_session)
    db_session.commit()
    reader, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    for path in (f"/api/instances/{done.instance_id}/prediction", f"/api/instances/{done.instance_id}/pixels",
                 f"/api/instances/{done.instance_id}/image.png?max_size=64", f"/api/heatmaps/{done.heatmap_id}.png",
                 f"/api/heatmaps/{done.heatmap_id}/data", f"/api/studies/{done.study_id}"):
        assert app_client.get(path, headers=headers).status_code == 200, path
    # A frame past the last one is refused (404): nothing was shown, nothing is recorded.
    assert app_client.get(f"/api/instances/{done.instance_id}/pixels?frame=5", headers=headers).status_code == 404

    (prediction,) = _events(db_session, user_id=reader.id, object_type="prediction")
    assert prediction.object_id == str(done.prediction_id) and prediction.detail == {"instance_id": done.instance_id}
    image = _events(db_session, user_id=reader.id, object_type="instance")
    assert [(e.object_id, e.detail["form"]) for e in image] == [(str(done.instance_id), "raw"),
                                                              (str(done.instance_id), "png")]
    heatmap = _events(db_session, user_id=reader.id, object_type="heatmap")
    assert [(e.object_id, e.detail["form"]) for e in heatmap] == [(str(done.heatmap_id), "png"),
                                                                (str(done.heatmap_id), "data")]
    (study,) = _events(db_session, user_id=reader.id, object_type="study")
    assert study.object_id == str(done.study_id) and study.detail == {"via": "api"}
    assert {event.ip for event in [prediction, *image, *heatmap, study]} == {CLIENT}


def test_pixels_are_audited_per_view_not_per_frame_nor_revalidation(app_client, make_user, db_session):
    data = (FIXTURES / "dicom" / "emri_small.dcm").read_bytes()
    stored = factories.insert_study(db_session, data=data, source_format="dicom", rows=64, columns=64, frames=10,
                                    modality="MR")
    db_session.commit()
    reader, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    for frame in range(4):
        response = app_client.get(f"/api/instances/{stored.instance_id}/pixels?frame={frame}", headers=headers)
        assert response.status_code == 200
    # A revalidation of what the client holds (304) sends no pixels: not recorded either.
    etag = app_client.get(f"/api/instances/{stored.instance_id}/pixels", headers=headers).headers["etag"]
    again = app_client.get(f"/api/instances/{stored.instance_id}/pixels",
                           headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304
    first, second = _events(db_session, user_id=reader.id, object_type="instance")
    assert first.detail == second.detail and first.object_id == second.object_id
    assert (first.object_id, first.detail, first.ip) == (str(stored.instance_id), {"form": "raw"}, CLIENT)


def test_a_submitted_read_is_audited_once(app_client, make_user, db_session):
    done = factories.done_study(db_session)
    db_session.commit()
    reader, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/reads/{uuid.uuid4()}/submit"
    body = {"study_id": done.study_id, "answers": {"finding": "nodule", "confidence": 3}}
    read = app_client.post(url, json=body, headers=headers)
    assert read.status_code == 201, read.text
    assert app_client.post(url, json=body, headers=headers).status_code == 200  # a resend changes nothing
    (event,) = _events(db_session, user_id=reader.id, object_type="read", action="read_submitted")
    assert event.object_id == str(read.json()["id"]) and event.ip == CLIENT
    assert event.detail == {"study_id": done.study_id, "assignment_id": None, "form": "finding"}
    # A clinical read names its study; a missing one is refused before anything is stored.
    refused = app_client.post(f"/api/reads/{uuid.uuid4()}/submit", json={"answers": body["answers"]},
                              headers=headers)
    assert refused.status_code == 422 and "study_id" in refused.json()["detail"]


def test_pages_that_show_patient_data_are_audited_but_not_the_polls(app_client, make_user, db_session):
    done = factories.done_study(db_session)
    db_session.commit()
    reader, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/", f"/studies/{done.study_id}", f"/studies/{done.study_id}/read", "/api/worklist",
                 f"/api/worklist/{done.study_id}"):
        assert app_client.get(path, headers=headers).status_code == 200, path
    (worklist,) = _events(db_session, user_id=reader.id, object_type="worklist")
    assert worklist.ip == CLIENT and worklist.detail["studies"] >= 1
    pages = _events(db_session, user_id=reader.id, object_type="study")
    assert [(event.object_id, event.ip) for event in pages] == [(str(done.study_id), CLIENT)] * 2
