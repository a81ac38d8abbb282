"""A clinical read records at submit the prediction the reading room showed beside its image and the heatmap the
reader had picked, if the prediction has one of that method: the server's rows, not the client's word."""

from __future__ import annotations

import uuid

from app.tables import Read

DR_ANSWERS = {"dr_grade": 2, "dme": False, "confidence": 4}


def _submit(client, headers, body: dict) -> dict:
    response = client.post(f"/api/reads/{uuid.uuid4()}/submit", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def _stored(db_session, read_id: int) -> Read:
    db_session.expire_all()
    return db_session.get(Read, read_id)


def test_a_clinical_read_records_the_prediction_beside_its_image(app_client, auth_headers, fundus_study, db_session):
    study = fundus_study()
    headers = auth_headers("reader")
    served = app_client.get(f"/api/instances/{study.instance_id}/prediction", headers=headers)
    assert served.status_code == 200, served.text
    body = {
        "study_id": study.study_id,
        "instance_id": study.instance_id,
        "answers": DR_ANSWERS,
        "assistance": {"visible": True, "method": "saliency"},
    }
    read = _stored(db_session, _submit(app_client, headers, body)["id"])
    snapshot = read.ai_snapshot
    assert read.ai_shown is True and (snapshot["condition"], snapshot["condition_kind"]) == (None, None)
    assert (snapshot["prediction_id"], snapshot["label"], snapshot["label_index"]) == (
        study.prediction_id,
        "abnormal",
        1,
    )
    assert abs(snapshot["probability"] - 0.83) <= 1e-9 and abs(snapshot["entropy"] - 0.456) <= 1e-9
    assert snapshot["referral"] is False and snapshot["method"] == "saliency"
    shown = served.json()
    assert (snapshot["model"], snapshot["model_version"]) == (shown["model"], shown["model_version"])
    assert abs(snapshot["probability"] - shown["probabilities"][shown["label_index"]]) <= 1e-9

    # A method the page did not have is not recorded; hidden assistance was not shown.
    hidden = {**body, "assistance": {"visible": False, "method": "occlusion"}}
    read = _stored(db_session, _submit(app_client, headers, hidden)["id"])
    assert read.ai_shown is False and read.ai_snapshot["method"] is None
    assert read.ai_snapshot["prediction_id"] == study.prediction_id


def test_a_read_of_no_image_records_no_ai(app_client, auth_headers, fundus_study, db_session):
    study = fundus_study()
    headers = auth_headers("reader")
    body = {"study_id": study.study_id, "answers": DR_ANSWERS, "assistance": {"visible": True}}
    read = _stored(db_session, _submit(app_client, headers, body)["id"])
    assert read.ai_shown is False and read.ai_snapshot["prediction_id"] is None and read.ai_snapshot["model"] is None


def test_a_draft_records_nothing_and_a_resubmit_keeps_the_first_record(
    app_client, auth_headers, fundus_study, db_session
):
    study = fundus_study()
    headers = auth_headers("reader")
    url = f"/api/reads/{uuid.uuid4()}"
    body = {
        "study_id": study.study_id,
        "instance_id": study.instance_id,
        "answers": DR_ANSWERS,
        "assistance": {"visible": True, "method": "gradcam"},
    }
    draft = app_client.put(url, json=body, headers=headers)
    assert draft.status_code == 201 and draft.json()["ai_shown"] is None
    assert _stored(db_session, draft.json()["id"]).ai_snapshot is None
    first = app_client.post(f"{url}/submit", json=body, headers=headers).json()
    again = app_client.post(f"{url}/submit", json={**body, "assistance": {"visible": False}}, headers=headers)
    assert again.status_code == 200 and again.json()["ai_shown"] is True == first["ai_shown"]
    assert _stored(db_session, first["id"]).ai_snapshot["method"] == "gradcam"
