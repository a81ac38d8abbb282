"""A simulated Sayres-style study, 5 readers x 40 cases x 3 conditions, run through the real API: the export
holds exactly what was entered, carries no PHI, and the dashboard's numbers equal reference functions."""

from __future__ import annotations

import csv
import io
import uuid

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import select

from app.statistics import mrmc
from app.tables import AuditEvent
from tests.app.reader_studies.conftest import open_study

READERS, CASES = 5, 40
NOISE = {"unassisted": 1.0, "grades": 0.7, "grades_heatmap": 0.5}  # assistance makes simulated readers better


def _answer(rng: np.random.Generator, truth: int, condition: str) -> dict:
    grade = int(np.clip(round(truth + rng.normal(0, NOISE.get(condition, 0.8))), 0, 4))
    return {"dr_grade": grade, "dme": bool(grade >= 3 and rng.random() < 0.8), "confidence": int(rng.integers(1, 6))}


def _read_everything(client, study, reader_headers, truth_of, rng, *, rate_method=None):
    """Each reader works through their queue in order; returns what was entered, by (reader, case)."""
    entered = {}
    case_study = {c["pseudonym"]: c["study_id"] for c in study["case_list"]}
    for headers in reader_headers:
        queue = client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
        for item in queue["assignments"]:
            view = client.get(f"/api/assignments/{item['id']}", headers=headers)
            assert view.status_code == 200, view.text
            study_id = case_study[item["case"]]
            toggles = int(rng.integers(0, 3)) if item["condition"] != "unassisted" else 0
            if toggles:
                events = [{"event": "hidden" if i % 2 == 0 else "shown", "study_id": study_id} for i in range(toggles)]
                response = client.post(f"/api/assignments/{item['id']}/assistance-events", json={"events": events},
                                       headers=headers)
                assert response.status_code == 201, response.text
            rating = None
            heatmaps = (view.json()["instances"][0]["assistance"] or {}).get("heatmaps", [])
            if heatmaps and rate_method:
                rating = {"relevant": int(rng.integers(1, 6)), "trust": int(rng.integers(1, 6)),
                          "misleading": int(rng.integers(1, 6))}
                body = {"client_id": str(uuid.uuid4()), "heatmap_id": heatmaps[0]["id"], "answers": rating,
                        "comment": "ok"}
                rated = client.post(f"/api/assignments/{item['id']}/ratings", json=body, headers=headers)
                assert rated.status_code == 201, rated.text
            answers = _answer(rng, truth_of[item["case"]], item["condition"])
            seconds = round(float(rng.uniform(5, 60)), 1)
            body = {"study_id": study_id, "answers": answers, "time_spent_seconds": seconds,
                    "assistance": {"visible": item["condition"] != "unassisted"}}
            client_id = uuid.uuid4()
            url = f"/api/assignments/{item['id']}/reads/{client_id}/submit"
            assert client.post(url, json=body, headers=headers).status_code == 201
            assert client.post(url, json=body, headers=headers).status_code == 200  # a resend changes nothing
            entered[(queue["reader"], item["case"])] = {**answers, "condition": item["condition"], "seconds": seconds,
                                                        "toggles": toggles, "rating": rating}
    return entered


def test_simulated_sayres_study_exports_what_was_entered(app_client, coordinator, make_cases, readers, db_session):
    rng = np.random.default_rng(2019)
    cases = make_cases(CASES)
    grades = [int(g) for g in rng.integers(0, 5, size=CASES)]
    users = readers(READERS)
    study = open_study(app_client, coordinator, cases=cases, reader_users=[u for u, _ in users], grades=grades,
                       seed=42, allow_toggle=True)
    truth_of = {c["pseudonym"]: c["reference"]["dr_grade"] for c in study["case_list"]}
    entered = _read_everything(app_client, study, [h for _, h in users], truth_of, rng, rate_method=True)
    assert len(entered) == READERS * CASES

    exported = app_client.get(f"/api/reader-studies/{study['id']}/export.csv", headers=coordinator)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == READERS * CASES
    for row in rows:
        want = entered[(row["reader"], row["case"])]
        assert row["condition"] == want["condition"] and row["state"] == "done"
        assert (int(row["dr_grade"]), row["dme"], int(row["confidence"])) == (
            want["dr_grade"], str(want["dme"]).lower(), want["confidence"])
        assert float(row["seconds"]) == want["seconds"] and int(row["toggles"]) == want["toggles"]
        assert int(row["reference_dr_grade"]) == truth_of[row["case"]]
        assisted = want["condition"] != "unassisted"
        assert row["ai_shown"] == str(assisted).lower() and (row["ai_label"] == "abnormal") == assisted
        assert row["ai_method"] == ("integrated_gradients" if want["condition"] == "grades_heatmap" else "")
        if want["rating"]:
            assert {k: int(row[f"rating_{k}"]) for k in want["rating"]} == want["rating"]
            assert row["rating_method"] == "integrated_gradients"
        else:
            assert row["rating_method"] == ""
    audit = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "export",
                                                        AuditEvent.object_id == str(study["id"]))).all()
    assert [(event.detail["format"], event.detail["rows"]) for event in audit] == [("csv", READERS * CASES)]
    json_export = app_client.get(f"/api/reader-studies/{study['id']}/export.json", headers=coordinator)
    assert json_export.status_code == 200 and len(json_export.json()["reads"]) == READERS * CASES
    for text in (exported.text, json_export.text):
        for case in cases:
            assert case.patient_name not in text and case.patient_id not in text and case.uid not in text
        for user, _ in users:
            assert user.email not in text

    stats = app_client.get(f"/api/reader-studies/{study['id']}/statistics", headers=coordinator).json()
    assert stats["progress"] == {**stats["progress"], "done": READERS * CASES, "total": READERS * CASES}
    for condition in stats["conditions"]:
        mine = [(r, c, v) for (r, c), v in entered.items() if v["condition"] == condition["key"]]
        answers = np.array([v["dr_grade"] for _, _, v in mine])
        truth = np.array([truth_of[c] for _, c, _ in mine])
        assert condition["reads"] == len(mine)
        assert condition["accuracy"] == pytest.approx(np.mean(answers == truth))
        referable, positive = answers >= 2, truth >= 2
        assert condition["sensitivity"] == pytest.approx(np.mean(referable[positive]))
        assert condition["specificity"] == pytest.approx(np.mean(~referable[~positive]))
        per_reader = []
        for reader in sorted({r for r, _, _ in mine}):
            a = [v["dr_grade"] for r, _, v in mine if r == reader]
            t = [truth_of[c] for r, c, _ in mine if r == reader]
            per_reader.append(cohen_kappa_score(a, t, weights="quadratic", labels=list(range(5))))
        assert condition["kappa_vs_reference_mean"] == pytest.approx(np.mean(per_reader))
        assert condition["toggles"] == sum(v["toggles"] for _, _, v in mine)
        assert condition["median_seconds"] == pytest.approx(np.median([v["seconds"] for _, _, v in mine]))
    # Pooled over conditions every reader read every case once: Fleiss' kappa as statsmodels computes it.
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    readers_ = sorted({r for r, _ in entered})
    table = np.array([[entered[(r, c)]["dr_grade"] for r in readers_] for c in sorted(truth_of)])
    counts, _ = aggregate_raters(table, n_cat=5)
    assert stats["agreement_pooled"]["fleiss_kappa"] == pytest.approx(fleiss_kappa(counts, method="fleiss"))
    ratings = [v["rating"] for v in entered.values() if v["rating"]]
    relevant = next(r for r in stats["ratings"]["by_method"] if r["question"] == "relevant")
    assert relevant["n"] == len(ratings)
    assert relevant["mean"] == pytest.approx(np.mean([r["relevant"] for r in ratings]))
    assert relevant["ci_low"] <= relevant["mean"] <= relevant["ci_high"]
    assert stats["mrmc"]["supported"] is False  # counterbalanced: each reader reads a case once
    page = app_client.get(f"/reader-studies/{study['id']}", headers=coordinator)
    # The plots are SVG images (data: URLs), outside the page's Content-Security-Policy.
    assert page.status_code == 200 and 'src="data:image/svg+xml,%3Csvg' in page.text and "results-table" in page.text


def test_crossed_study_gets_an_orh_comparison_equal_to_the_library(app_client, coordinator, make_cases, readers):
    rng = np.random.default_rng(7)
    cases = make_cases(12)
    grades = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 1, 3]
    users = readers(3)
    conditions = [{"key": "unassisted", "kind": "unassisted"}, {"key": "grades", "kind": "prediction"}]
    study = open_study(app_client, coordinator, cases=cases, reader_users=[u for u, _ in users], grades=grades,
                       scheme="crossed", conditions=conditions, seed=5)
    truth_of = {c["pseudonym"]: c["reference"]["dr_grade"] for c in study["case_list"]}
    entered = {}
    for headers in [h for _, h in users]:  # crossed: the entered dict needs (reader, case, condition) keys
        queue = app_client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
        sessions = [item["session"] for item in queue["assignments"]]
        assert sessions == sorted(sessions) and set(sessions) == {1, 2}
        for item in queue["assignments"]:
            answers = _answer(rng, truth_of[item["case"]], item["condition"])
            study_id = next(c["study_id"] for c in study["case_list"] if c["pseudonym"] == item["case"])
            url = f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit"
            response = app_client.post(url, json={"study_id": study_id, "answers": answers}, headers=headers)
            assert response.status_code == 201, response.text
            entered[(queue["reader"], item["case"], item["condition"])] = answers["dr_grade"]
    stats = app_client.get(f"/api/reader-studies/{study['id']}/statistics", headers=coordinator).json()
    comparison = stats["mrmc"]["comparisons"][0]
    assert comparison["supported"] is True
    readers_, cases_ = sorted({r for r, _, _ in entered}), sorted(truth_of)
    scores = np.array([[[entered[(r, c, m)] for c in cases_] for r in readers_] for m in ("unassisted", "grades")],
                      dtype=float)
    expected = mrmc.mrmc_analysis(scores=scores, truth=np.array([truth_of[c] >= 2 for c in cases_]))
    assert comparison["f"] == pytest.approx(expected.f) and comparison["p"] == pytest.approx(expected.p)
    assert comparison["auc"]["grades"] == pytest.approx(expected.modality_means[1])
