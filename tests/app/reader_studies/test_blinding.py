"""The server enforces the condition: an unassisted read never sends the model's output to the browser,
and no other route hands it over while the read is pending. Checked by inspecting the HTTP responses."""

from __future__ import annotations

import uuid

from tests.app.reader_studies.conftest import open_study

DR = {"dr_grade": 2, "dme": False, "confidence": 3}


def _assignments_by_condition(client, headers, study_id):
    queue = client.get(f"/api/reader-studies/{study_id}/queue", headers=headers).json()
    return queue


def _submit(client, headers, assignment_id, study_id):
    body = {"study_id": study_id, "answers": DR, "time_spent_seconds": 5}
    url = f"/api/assignments/{assignment_id}/reads/{uuid.uuid4()}/submit"
    response = client.post(url, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def _leaks(text: str, case, *, model_output: bool = True) -> list[str]:
    """PHI of the case, and (when `model_output`) its prediction (0.83 'abnormal') and heatmap methods."""
    needles = [case.patient_name, case.patient_id, case.uid]
    if model_output:
        needles += ["0.83", "abnormal", "/api/heatmaps/", *case.heatmaps]
    return [needle for needle in needles if needle in text]


def test_each_condition_carries_only_what_it_shows(app_client, coordinator, make_cases, readers):
    cases = make_cases(3)
    (user, headers), = readers(1)
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], seed=11)
    by_case = {case.study_id: case for case in cases}
    case_of = {c["pseudonym"]: by_case[c["study_id"]] for c in study["case_list"]}
    seen_kinds = set()
    for _ in range(3):
        queue = app_client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
        item = next(entry for entry in queue["assignments"] if entry["available"])
        case = case_of[item["case"]]
        view = app_client.get(f"/api/assignments/{item['id']}", headers=headers)
        page = app_client.get(f"/assignments/{item['id']}/read", headers=headers)
        assert view.status_code == page.status_code == 200
        data = view.json()
        assert [i["id"] for i in data["instances"]] == [case.instance_id]
        assert data["study"]["patient_name"] == "" and data["study"]["ai_label"] is None
        assistance = data["instances"][0]["assistance"]
        kind = data["assignment"]["kind"]
        seen_kinds.add(kind)
        prediction = app_client.get(f"/api/instances/{case.instance_id}/prediction", headers=headers)
        gradcam = app_client.get(f"/api/heatmaps/{case.heatmaps['gradcam']}/data", headers=headers)
        ig = app_client.get(f"/api/heatmaps/{case.heatmaps['integrated_gradients']}/data", headers=headers)
        if kind == "unassisted":
            assert assistance is None
            assert _leaks(view.text, case) == [] and _leaks(page.text, case) == []
            assert prediction.status_code == 403 and "hidden until you have read it" in prediction.json()["detail"]
            assert gradcam.status_code == ig.status_code == 403
        elif kind == "prediction":
            assert assistance["label"] == "abnormal" and assistance["heatmaps"] == []
            assert prediction.status_code == 200 and prediction.json()["heatmaps"] == []
            assert gradcam.status_code == ig.status_code == 403
            assert _leaks(page.text, case, model_output=False) == []
            assert "gradcam" not in page.text and "integrated_gradients" not in page.text
        else:
            assert [h["method"] for h in assistance["heatmaps"]] == ["integrated_gradients"]
            assert [h["method"] for h in prediction.json()["heatmaps"]] == ["integrated_gradients"]
            assert ig.status_code == 200 and gradcam.status_code == 403
        # The clinical pages of the case are closed while the read is pending ...
        assert app_client.get(f"/studies/{case.study_id}", headers=headers).status_code == 403
        assert app_client.get(f"/studies/{case.study_id}/read", headers=headers).status_code == 403
        row = app_client.get(f"/api/worklist/{case.study_id}", headers=headers).json()
        assert row["ai_label"] is None
        _submit(app_client, headers, item["id"], case.study_id)
        # ... and open again once it is done.
        assert app_client.get(f"/api/instances/{case.instance_id}/prediction", headers=headers).status_code == 200
        assert app_client.get(f"/studies/{case.study_id}", headers=headers).status_code == 200
    assert seen_kinds == {"unassisted", "prediction", "prediction_heatmap"}


def test_queue_order_sequential_steps_and_other_readers(app_client, coordinator, make_cases, readers):
    cases = make_cases(2)
    (user, headers), (_, other) = readers(2)
    conditions = [{"key": "unaided", "kind": "unassisted"},
                  {"key": "aided", "kind": "prediction_heatmap", "method": "gradcam"}]
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], scheme="sequential",
                       conditions=conditions, seed=3)
    queue = app_client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
    first, second = queue["assignments"][0], queue["assignments"][1]
    assert (first["condition"], second["condition"], first["case"]) == ("unaided", "aided", second["case"])
    # The aided read of the case waits for the unaided one, and does not leak meanwhile.
    early = app_client.get(f"/api/assignments/{second['id']}", headers=headers)
    assert early.status_code == 409 and "order of your queue" in early.json()["detail"]
    case = next(c for c in cases if c.study_id in {x["study_id"] for x in study["case_list"]
                                                   if x["pseudonym"] == first["case"]})
    assert app_client.get(f"/api/heatmaps/{case.heatmaps['gradcam']}/data", headers=headers).status_code == 403
    # Another reader cannot see or answer this reader's assignment.
    assert app_client.get(f"/api/assignments/{first['id']}", headers=other).status_code == 404
    read = _submit(app_client, headers, first["id"], case.study_id)
    assert read["assignment_id"] == first["id"]
    aided = app_client.get(f"/api/assignments/{second['id']}", headers=headers).json()
    assert [h["method"] for h in aided["instances"][0]["assistance"]["heatmaps"]] == ["gradcam"]
    # A done read is not read again under a new client id.
    again = app_client.post(f"/api/assignments/{first['id']}/reads/{uuid.uuid4()}/submit",
                            json={"study_id": case.study_id, "answers": DR}, headers=headers)
    assert again.status_code == 409


def test_reference_only_in_educational_studies_after_the_read(app_client, coordinator, make_cases, readers):
    cases = make_cases(1)
    (user, headers), = readers(1)
    for educational in (False, True):
        study = open_study(app_client, coordinator, cases=cases, reader_users=[user], grades=[3],
                           conditions=[{"key": "unassisted", "kind": "unassisted"}], educational=educational)
        item = app_client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()["assignments"][0]
        before = app_client.get(f"/api/assignments/{item['id']}", headers=headers).json()
        assert before["assignment"]["reference"] is None
        _submit(app_client, headers, item["id"], cases[0].study_id)
        after = app_client.get(f"/api/assignments/{item['id']}", headers=headers).json()
        assert after["assignment"]["reference"] == ({"dr_grade": 3, "dme": True} if educational else None)


def test_crossed_sessions_wait_for_the_washout(app_client, coordinator, make_cases, readers, db_session):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from app.tables import StudyAssignment

    cases = make_cases(2)
    (user, headers), = readers(1)
    conditions = [{"key": "unassisted", "kind": "unassisted"}, {"key": "grades", "kind": "prediction"}]
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], scheme="crossed",
                       conditions=conditions, washout_days=14)
    study_of = {c["pseudonym"]: c["study_id"] for c in study["case_list"]}
    queue = app_client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
    for item in queue["assignments"][:2]:
        assert item["session"] == 1
        _submit(app_client, headers, item["id"], study_of[item["case"]])
    waiting = app_client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
    assert waiting["next_url"] is None and "washout" in waiting["waiting_reason"]
    second = waiting["assignments"][2]
    assert app_client.get(f"/api/assignments/{second['id']}", headers=headers).status_code == 409
    # Two weeks later (completion times moved back), session 2 opens.
    db_session.execute(update(StudyAssignment).where(StudyAssignment.reader_study_id == study["id"],
                                                     StudyAssignment.session == 1)
                       .values(completed_at=datetime.now(UTC) - timedelta(days=15)))
    db_session.commit()
    assert app_client.get(f"/api/assignments/{second['id']}", headers=headers).status_code == 200
