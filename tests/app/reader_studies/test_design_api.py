"""Designing a study through the API: validation, the reference CSV, readers, opening and freezing."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from app.tables import StudyAssignment, StudyCase
from tests.app.reader_studies.conftest import create_study, open_study, reference_csv


def test_defaults_are_the_three_sayres_arms(app_client, coordinator):
    study = create_study(app_client, coordinator)
    assert [c["kind"] for c in study["conditions"]] == ["unassisted", "prediction", "prediction_heatmap"]
    assert study["conditions"][2]["method"] == "integrated_gradients"
    assert study["state"] == "draft" and study["scheme"] == "counterbalanced" and study["seed"] >= 0


def test_bad_designs_get_a_reason(app_client, coordinator, auth_headers):
    bad = [
        ({"conditions": [{"key": "a", "kind": "prediction_heatmap"}]}, "name its method"),
        ({"conditions": [{"key": "a", "kind": "prediction_heatmap", "method": "magic"}]}, "unknown method"),
        ({"conditions": [{"key": "a", "kind": "unassisted"}, {"key": "a", "kind": "prediction"}]}, "unique"),
        ({"scheme": "sequential"}, "two conditions"),
        ({"task": "explanation_rating"}, "explanation in every condition"),
        ({"questions": ["nonsense"]}, "unknown question"),
    ]
    for fields, reason in bad:
        response = app_client.post("/api/reader-studies", json={"name": "bad", **fields}, headers=coordinator)
        assert response.status_code == 422, fields
        assert reason in response.text, (fields, response.text)
    assert app_client.post("/api/reader-studies", json={"name": "x"}, headers=auth_headers("reader")).status_code == 403
    study = create_study(app_client, coordinator)
    again = app_client.post("/api/reader-studies", json={"name": study["name"]}, headers=coordinator)
    assert again.status_code == 409


def test_reference_csv_is_checked_whole_before_anything_changes(app_client, coordinator, make_cases, db_session):
    cases = make_cases(3)
    study = create_study(app_client, coordinator)
    url = f"/api/reader-studies/{study['id']}/reference"
    csv_headers = {**coordinator, "Content-Type": "text/csv"}
    broken = reference_csv(cases, [0, 2, 4]).replace(f"{cases[1].uid},2", f"{cases[1].uid},7") + "2.25.999,1,no\n"
    response = app_client.post(url, content=broken, headers=csv_headers)
    assert response.status_code == 422
    assert "line 3: dr_grade must be an ICDR grade 0-4" in response.json()["detail"]
    assert "line 5: no stored study 2.25.999" in response.json()["detail"]
    count = select(func.count()).select_from(StudyCase).where(StudyCase.reader_study_id == study["id"])
    assert db_session.scalar(count) == 0  # nothing stored
    assert app_client.post(url, content="a,b\n1,2\n", headers=csv_headers).status_code == 422
    assert app_client.post(url, content=b"\xff\xfe", headers=csv_headers).status_code == 422

    ok = app_client.post(url, files={"file": ("ref.csv", reference_csv(cases, [0, 2, 4]), "text/csv")},
                         headers=coordinator)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"cases_added": 3, "references_set": 3}
    detail = app_client.get(f"/api/reader-studies/{study['id']}", headers=coordinator).json()
    assert [c["reference"] for c in detail["case_list"]] == [
        {"dr_grade": 0, "dme": False}, {"dr_grade": 2, "dme": False}, {"dr_grade": 4, "dme": True}]
    assert [c["pseudonym"] for c in detail["case_list"]] == ["C0001", "C0002", "C0003"]


def test_open_needs_the_assistance_the_conditions_show(app_client, coordinator, make_cases, readers):
    with_maps, without = make_cases(2), make_cases(1, heatmaps=False)
    study = create_study(app_client, coordinator)
    sid = study["id"]
    ids = [case.study_id for case in with_maps + without]
    added = app_client.post(f"/api/reader-studies/{sid}/cases", json={"study_ids": ids}, headers=coordinator)
    assert added.json() == {"added": 3}
    bad_reader = app_client.post(f"/api/reader-studies/{sid}/readers", json={"emails": ["nobody@example.org"]},
                                 headers=coordinator)
    assert bad_reader.status_code == 422 and "nobody@example.org" in bad_reader.text
    emails = [user.email for user, _ in readers(2)]
    app_client.post(f"/api/reader-studies/{sid}/readers", json={"emails": emails}, headers=coordinator)
    refused = app_client.post(f"/api/reader-studies/{sid}/open", json={}, headers=coordinator)
    assert refused.status_code == 422 and "C0003 has no prediction" in refused.text


def test_open_writes_a_balanced_seeded_design_and_freezes_it(app_client, coordinator, make_cases, readers, db_session):
    cases = make_cases(6)
    users = [user for user, _ in readers(3)]
    study = open_study(app_client, coordinator, cases=cases, reader_users=users, seed=7)
    assert study["state"] == "open" and study["assignments"] == 18 and study["seed"] == 7
    rows = db_session.execute(
        select(StudyAssignment.study_reader_id, StudyAssignment.case_id, StudyAssignment.condition)
        .where(StudyAssignment.reader_study_id == study["id"])
    ).all()
    per_reader = Counter((reader, condition) for reader, _, condition in rows)
    assert set(per_reader.values()) == {2}  # each reader: each of 3 conditions on 2 of 6 cases
    per_case = Counter((case, condition) for _, case, condition in rows)
    assert set(per_case.values()) == {1}  # 3 readers: each case once under each condition
    sid = study["id"]
    frozen = app_client.post(f"/api/reader-studies/{sid}/cases", json={"study_ids": [cases[0].study_id]},
                             headers=coordinator)
    assert frozen.status_code == 409 and "draft" in frozen.text
    assert app_client.post(f"/api/reader-studies/{sid}/open", json={}, headers=coordinator).status_code == 409
