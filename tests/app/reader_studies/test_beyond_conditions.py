"""Explanations beyond heatmaps as reader-study conditions: each condition carries only its own explanation
(similar cases, concept evidence, or the written justification), its reader rates that explanation on the
study's Likert questions, and the exports say what each read was shown."""

from __future__ import annotations

import base64
import csv
import io
import uuid

from sqlalchemy import update

from app.tables import Prediction
from tests.app.reader_studies.conftest import open_study
from tests.app.viewer import factories

DR = {"dr_grade": 2, "dme": False, "confidence": 3}
SIMILAR = [
    {"rank": 1, "index": 7, "case_id": "retinamnist/train/0007", "label_indices": [1], "similarity": 0.97},
    {"rank": 2, "index": 9, "case_id": "retinamnist/train/0009", "label_indices": [0], "similarity": 0.95},
]
CONCEPTS = [
    {"concept": "haemorrhages", "sensitivity": 0.3, "strength": "strong", "accuracy": 0.81},
    {"concept": "optic disc", "sensitivity": -0.1, "strength": "none", "accuracy": 0.9},
]
CONDITIONS = [
    {"key": "similar", "kind": "prediction_similar", "label": "Similar cases"},
    {"key": "concepts", "kind": "prediction_concepts", "label": "Concept evidence"},
    {"key": "text", "kind": "prediction_justification", "label": "Justification"},
]


THUMBNAILS = [factories.png_bytes(width=28, height=28), factories.png_bytes(width=20, height=20)]


def _with_beyond(db_session, cases) -> None:
    db_session.execute(
        update(Prediction)
        .where(Prediction.instance_id.in_([case.instance_id for case in cases]))
        .values(similar_cases=SIMILAR, concepts=CONCEPTS,
                similar_thumbnails=[base64.b64encode(png).decode() for png in THUMBNAILS])
    )
    db_session.commit()


def _shown(assistance: dict) -> set[str]:
    return {key for key in ("similar_cases", "concepts", "justification") if assistance.get(key) is not None}


def _rate(client, headers, assignment_id, **what):
    body = {"client_id": str(uuid.uuid4()), "answers": {"trust": 4}, **what}
    return client.post(f"/api/assignments/{assignment_id}/ratings", json=body, headers=headers)


def test_each_condition_shows_and_rates_only_its_explanation(app_client, coordinator, make_cases, readers, db_session):
    cases = make_cases(3)
    _with_beyond(db_session, cases)
    (user, headers), = readers(1)
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], conditions=CONDITIONS, seed=5)
    expected = {"prediction_similar": {"similar_cases"}, "prediction_concepts": {"concepts"},
                "prediction_justification": {"justification"}}
    seen = set()
    for _ in range(3):
        queue = app_client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
        item = next(entry for entry in queue["assignments"] if entry["available"])
        view = app_client.get(f"/api/assignments/{item['id']}", headers=headers).json()
        kind, assistance = view["assignment"]["kind"], view["instances"][0]["assistance"]
        seen.add(kind)
        assert _shown(assistance) == expected[kind] and assistance["heatmaps"] == []
        prediction_id = assistance["prediction_id"]
        # The prediction API and the thumbnails follow the same rule while the read is pending.
        api = app_client.get(f"/api/instances/{view['instances'][0]['id']}/prediction", headers=headers).json()
        assert (api["similar_cases"] is not None) == (kind == "prediction_similar")
        assert (api["concepts"] is not None) == (kind == "prediction_concepts")
        thumbnail = app_client.get(f"/api/predictions/{prediction_id}/similar/1.png", headers=headers)
        if kind == "prediction_similar":
            assert [case["case_id"] for case in assistance["similar_cases"]["cases"]] == [c["case_id"] for c in SIMILAR]
            assert assistance["similar_cases"]["agreeing"] == sum(1 in c["label_indices"] for c in SIMILAR)
            assert thumbnail.status_code == 200 and thumbnail.content == THUMBNAILS[0]
            third = app_client.get(f"/api/predictions/{prediction_id}/similar/3.png", headers=headers)
            assert third.status_code == 404 and "no similar case ranked 3" in third.json()["detail"]
        else:
            assert thumbnail.status_code == 403
        if kind == "prediction_concepts":
            assert assistance["concepts"]["headline"] == "haemorrhages (strong)"
        if kind == "prediction_justification":
            assert assistance["justification"][0].startswith(f"The model grades this image {assistance['label']}")
        # Rating: the explanation shown is rateable, the others are not; no heatmap is shown to rate.
        mine = next(iter(expected[kind]))
        other = next(iter({"similar_cases", "concepts", "justification"} - {mine}))
        refused = _rate(app_client, headers, item["id"], prediction_id=prediction_id, explanation=other)
        assert refused.status_code == 422 and "is not shown in this assignment" in refused.json()["detail"]
        rated = _rate(app_client, headers, item["id"], prediction_id=prediction_id, explanation=mine)
        assert rated.status_code == 201, rated.text
        assert (rated.json()["method"], rated.json()["heatmap_id"], rated.json()["prediction_id"]) == (
            mine, None, prediction_id)
        submitted = app_client.post(f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit",
                                    json={"study_id": None, "answers": DR, "time_spent_seconds": 4}, headers=headers)
        assert submitted.status_code == 201, submitted.text
    assert seen == set(expected)

    export = app_client.get(f"/api/reader-studies/{study['id']}/export.csv", headers=coordinator)
    assert export.status_code == 200, export.text
    rows = {row["condition"]: row for row in csv.DictReader(io.StringIO(export.text))}
    assert rows["similar"]["condition_kind"] == "prediction_similar"
    assert rows["similar"]["ai_similar_cases"] == "retinamnist/train/0007 retinamnist/train/0009"
    assert rows["similar"]["ai_concepts"] == "" and rows["similar"]["ai_justification"] == ""
    assert rows["concepts"]["ai_concepts"] == "haemorrhages (strong)" and rows["concepts"]["ai_similar_cases"] == ""
    assert rows["text"]["ai_justification"].startswith("The model grades this image")
    assert {rows[key]["rating_method"] for key in rows} == {"similar_cases", "concepts", "justification"}


def test_a_rating_names_one_explanation(app_client, make_cases, readers, db_session):
    cases = make_cases(1)
    (_, headers), = readers(1)
    prediction_id = db_session.query(Prediction.id).filter_by(instance_id=cases[0].instance_id).scalar()
    both = {"client_id": str(uuid.uuid4()), "answers": {"trust": 3}, "heatmap_id": cases[0].heatmaps["gradcam"],
            "prediction_id": prediction_id, "explanation": "concepts"}
    assert app_client.post("/api/ratings", json=both, headers=headers).status_code == 422
    neither = {"client_id": str(uuid.uuid4()), "answers": {"trust": 3}, "prediction_id": prediction_id}
    assert app_client.post("/api/ratings", json=neither, headers=headers).status_code == 422
    # A prediction without concept evidence has none to rate; its justification it always has.
    missing = {**neither, "explanation": "concepts"}
    response = app_client.post("/api/ratings", json=missing, headers=headers)
    assert response.status_code == 422 and "no concept evidence" in response.json()["detail"]
    fine = app_client.post("/api/ratings", json={**neither, "explanation": "justification"}, headers=headers)
    assert fine.status_code == 201 and fine.json()["method"] == "justification"
