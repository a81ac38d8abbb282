"""The AI a reader had at submit is recorded by the server on the read (Read.ai_shown, Read.ai_snapshot) from the
prediction it served under the assignment's condition, and the CSV and JSON exports carry that record, unchanged
by later changes of the prediction or the model."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

from sqlalchemy import select

from app.reader_studies.export import AI_COLUMNS, COLUMNS, FINDING_COLUMNS
from app.tables import AiModel, Prediction, Read
from tests.app.reader_studies.conftest import open_study

DR = {"dr_grade": 2, "dme": False, "confidence": 3}
# Odd values, so that equality to 1e-9 says the stored number is the served one, not a rounding of it.
PROBABILITIES = [0.12345678912345678, 0.8765432108765432]
ENTROPY = 0.37719462138451237
AI_KEYS = ("model", "model_version", "label", "label_index", "probability", "entropy", "referral", "method")
DOCS = Path(__file__).resolve().parents[3] / "docs" / "reader-studies.md"


def _odd_predictions(db_session, cases) -> None:
    for case in cases:
        prediction = db_session.scalar(select(Prediction).where(Prediction.instance_id == case.instance_id))
        prediction.probabilities, prediction.predictive_entropy, prediction.referral = PROBABILITIES, ENTROPY, True
    db_session.commit()


def _read_queue(client, headers, study_id: int, *, assistance: dict | None = None) -> dict[str, dict]:
    """Read every assignment of the reader in order; returns, by case pseudonym, the view served and the read."""
    seen = {}
    queue = client.get(f"/api/reader-studies/{study_id}/queue", headers=headers).json()
    for item in queue["assignments"]:
        view = client.get(f"/api/assignments/{item['id']}", headers=headers)
        assert view.status_code == 200, view.text
        body = {"answers": DR, "time_spent_seconds": 7.5, **({"assistance": assistance} if assistance else {})}
        response = client.post(f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit", json=body, headers=headers)
        assert response.status_code == 201, response.text
        seen[item["case"]] = {"view": view.json(), "read": response.json(), "condition": item["condition"]}
    return seen


def _stored(db_session, read_id: int) -> Read:
    db_session.expire_all()
    return db_session.get(Read, read_id)


def test_submit_records_the_served_prediction_under_each_condition(
    app_client, coordinator, make_cases, readers, db_session
):
    cases = make_cases(3)
    _odd_predictions(db_session, cases)
    ((user, headers),) = readers(1)
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], seed=11)
    seen = _read_queue(app_client, headers, study["id"])
    kinds = {entry["view"]["assignment"]["kind"] for entry in seen.values()}
    assert kinds == {"unassisted", "prediction", "prediction_heatmap"}
    for entry in seen.values():
        kind, read = entry["view"]["assignment"]["kind"], _stored(db_session, entry["read"]["id"])
        snapshot = read.ai_snapshot
        assert (snapshot["condition"], snapshot["condition_kind"]) == (entry["condition"], kind)
        served = entry["view"]["instances"][0]["assistance"]
        if kind == "unassisted":
            assert served is None
            assert read.ai_shown is False and entry["read"]["ai_shown"] is False
            assert all(snapshot[key] is None for key in (*AI_KEYS, "prediction_id", "heatmap_id"))
            continue
        assert read.ai_shown is True and entry["read"]["ai_shown"] is True
        assert (snapshot["model"], snapshot["model_version"]) == (served["model_name"], served["model_version"])
        assert (snapshot["label"], snapshot["label_index"]) == (served["label"], served["label_index"])
        assert (snapshot["prediction_id"], snapshot["referral"]) == (served["prediction_id"], served["referral"])
        shown_probability = served["probabilities"][served["label_index"]]["probability"]
        assert abs(snapshot["probability"] - shown_probability) <= 1e-9
        assert abs(snapshot["probability"] - PROBABILITIES[1]) <= 1e-9
        assert abs(snapshot["entropy"] - served["uncertainty"]["entropy"]) <= 1e-9
        assert abs(snapshot["entropy"] - ENTROPY) <= 1e-9 and snapshot["referral"] is True
        if kind == "prediction":
            assert served["heatmaps"] == [] and snapshot["method"] is None and snapshot["heatmap_id"] is None
        else:
            [heatmap] = served["heatmaps"]
            assert (snapshot["method"], snapshot["heatmap_id"]) == ("integrated_gradients", heatmap["id"])
            assert heatmap["method"] == "integrated_gradients"


def test_exports_carry_the_snapshot_and_later_prediction_changes_do_not_alter_it(
    app_client, coordinator, make_cases, readers, db_session
):
    cases = make_cases(3)
    _odd_predictions(db_session, cases)
    ((user, headers),) = readers(1)
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], seed=11)
    seen = _read_queue(app_client, headers, study["id"])

    def exported() -> tuple[str, list[dict], list[dict]]:
        as_csv = app_client.get(f"/api/reader-studies/{study['id']}/export.csv", headers=coordinator)
        as_json = app_client.get(f"/api/reader-studies/{study['id']}/export.json", headers=coordinator)
        assert as_csv.status_code == as_json.status_code == 200
        return as_csv.text, list(csv.DictReader(io.StringIO(as_csv.text))), as_json.json()["reads"]

    text, csv_rows, json_rows = exported()
    header = next(csv.reader(io.StringIO(text)))
    added = ["ai_shown", *AI_COLUMNS, *FINDING_COLUMNS]  # after the columns before revision 0008, in this order
    # Later revisions add their columns after these (the evidence marks' count, ...), never between them.
    start = header.index("submitted_at") + 1
    assert header == list(COLUMNS) and header[start : start + len(added)] == added
    for row, as_json in zip(csv_rows, json_rows, strict=True):
        entry = seen[row["case"]]
        snapshot = _stored(db_session, entry["read"]["id"]).ai_snapshot
        assert row["condition"] == as_json["condition"] == entry["condition"]
        if entry["view"]["assignment"]["kind"] == "unassisted":
            assert row["ai_shown"] == "false" and as_json["ai_shown"] is False
            assert all(row[column] == "" and as_json[column] is None for column in AI_COLUMNS)
            continue
        assert row["ai_shown"] == "true" and as_json["ai_shown"] is True
        assert (row["ai_model"], row["ai_model_version"], row["ai_label"]) == (
            snapshot["model"],
            snapshot["model_version"],
            snapshot["label"],
        )
        assert abs(float(row["ai_probability"]) - PROBABILITIES[1]) <= 1e-9
        assert abs(as_json["ai_probability"] - PROBABILITIES[1]) <= 1e-9
        assert abs(float(row["ai_entropy"]) - ENTROPY) <= 1e-9 and row["ai_referral"] == "true"
        assert as_json["ai_model_version"] == snapshot["model_version"] and as_json["ai_referral"] is True
        assert row["ai_method"] == (as_json["ai_method"] or "") == (snapshot["method"] or "")

    # The model is retrained and the predictions rewritten: the reads keep what their readers had.
    for number, case in enumerate(cases):
        prediction = db_session.scalar(select(Prediction).where(Prediction.instance_id == case.instance_id))
        prediction.probabilities, prediction.label, prediction.label_index = [0.9, 0.1], "normal", 0
        prediction.predictive_entropy, prediction.referral = 0.1, False
        db_session.get(AiModel, prediction.model_id).version = f"9.9.{number}"
    db_session.commit()
    assert exported()[1:] == (csv_rows, json_rows)


def test_a_hidden_assistance_is_not_shown_but_what_was_served_is_kept(
    app_client, coordinator, make_cases, readers, db_session
):
    cases = make_cases(1)
    ((user, headers),) = readers(1)
    conditions = [{"key": "grades", "kind": "prediction", "method": None}]
    study = open_study(
        app_client, coordinator, cases=cases, reader_users=[user], conditions=conditions, allow_toggle=True
    )
    [entry] = _read_queue(app_client, headers, study["id"], assistance={"visible": False}).values()
    read = _stored(db_session, entry["read"]["id"])
    assert read.ai_shown is False and read.assisted is False
    assert read.ai_snapshot["label"] == "abnormal" and abs(read.ai_snapshot["probability"] - 0.83) <= 1e-9


def test_a_fixed_assistance_counts_as_shown_whatever_the_client_reports(
    app_client, coordinator, make_cases, readers, db_session
):
    cases = make_cases(1)
    ((user, headers),) = readers(1)
    conditions = [{"key": "grades", "kind": "prediction", "method": None}]
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], conditions=conditions)
    [entry] = _read_queue(app_client, headers, study["id"], assistance={"visible": False}).values()
    assert _stored(db_session, entry["read"]["id"]).ai_shown is True  # the reader could not hide it


def test_the_docs_table_names_every_export_column() -> None:
    text = DOCS.read_text()
    documented = {line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")}
    assert set(COLUMNS) <= documented, sorted(set(COLUMNS) - documented)
