"""A binary-finding study names its finding: the design refuses one without, readers are asked "<Finding>
present?", the AI arms show the model's probability of that finding (its label, not the model's top one), the
snapshot and the exports record it, the reference CSV takes present/absent, and the statistics count the finding
present as positive."""

from __future__ import annotations

import csv
import io
import secrets
import uuid

import pytest
from sqlalchemy import select

from app.reader_studies.export import COLUMNS, FINDING_COLUMNS
from app.tables import AiModel, Read, ReaderStudy
from tests.app.reader_studies.conftest import create_study, next_assignment

EFFUSION_ARMS = [
    {"key": "unassisted", "kind": "unassisted"},
    {"key": "ai_effusion", "kind": "prediction", "label": "AI effusion probability"},
    {"key": "ai_effusion_heatmap", "kind": "prediction_heatmap", "method": "integrated_gradients"},
]
CSV = {"Content-Type": "text/csv"}


def _fill_and_open(client, coordinator, *, study_id: int, cases, references: list[str], emails: list[str]) -> None:
    text = "study_instance_uid,finding\n" + "".join(
        f"{case.uid},{reference}\n" for case, reference in zip(cases, references, strict=True)
    )
    for url, kwargs in (
        (f"/api/reader-studies/{study_id}/reference", {"content": text, "headers": {**coordinator, **CSV}}),
        (f"/api/reader-studies/{study_id}/readers", {"json": {"emails": emails}, "headers": coordinator}),
        (f"/api/reader-studies/{study_id}/open", {"json": {}, "headers": coordinator}),
    ):
        response = client.post(url, **kwargs)
        assert response.status_code == 200, response.text


def _submit(client, headers, assignment_id: int, answers: dict) -> object:
    return client.post(
        f"/api/assignments/{assignment_id}/reads/{uuid.uuid4()}/submit",
        json={"answers": answers, "time_spent_seconds": 3},
        headers=headers,
    )


def test_a_binary_finding_study_names_its_finding(app_client, coordinator):
    missing = app_client.post("/api/reader-studies", json={"name": "no finding", "task": "binary_finding"},
                              headers=coordinator)
    assert missing.status_code == 422 and "names the finding it reads" in missing.text
    blank = app_client.post("/api/reader-studies", json={"name": "blank", "task": "binary_finding", "finding": "  "},
                            headers=coordinator)
    assert blank.status_code == 422 and "names the finding it reads" in blank.text
    other = app_client.post("/api/reader-studies", json={"name": "dr", "finding": "effusion"}, headers=coordinator)
    assert other.status_code == 422 and "only a binary-finding study names a finding" in other.text

    study = create_study(app_client, coordinator, task="binary_finding", finding="effusion", conditions=EFFUSION_ARMS)
    assert study["finding"] == "effusion"
    assert create_study(app_client, coordinator)["finding"] == ""  # DR grading: none
    listed = {item["id"]: item for item in app_client.get("/api/reader-studies", headers=coordinator).json()}
    assert listed[study["id"]]["finding"] == "effusion"
    page = app_client.get(f"/reader-studies/{study['id']}", headers=coordinator).text
    assert "Finding read: <strong>effusion</strong>" in page and "“Effusion present?”" in page
    assert "whether effusion is present: present/absent, 1/0 or yes/no" in page
    numbers = app_client.get(f"/api/reader-studies/{study['id']}/statistics", headers=coordinator).json()
    assert numbers["study"]["finding"] == "effusion"


def test_the_designer_offers_the_labels_of_the_model_served_on_chest_radiographs(app_client, coordinator, db_session):
    served = AiModel(name=f"chest-served-{secrets.token_hex(3)}", version="1", task="multilabel",
                     labels=["effusion", "Pleural_Thickening"], modalities=["CR", "DX"], input_spec={},
                     weights_sha256="0" * 64, card={"domain": {"body_parts": ["CHEST"]}}, is_active=True)
    db_session.add(served)
    db_session.commit()
    try:
        choices = app_client.get("/api/reader-studies/finding-choices", headers=coordinator)
        assert choices.status_code == 200, choices.text
        assert {"finding": "effusion", "models": [served.name]} in choices.json()
        assert {"finding": "Pleural_Thickening", "models": [served.name]} in choices.json()
        dr = app_client.get("/api/reader-studies/finding-choices?task=dr_grading", headers=coordinator)
        assert dr.json() == []
        designer = app_client.get("/reader-studies", headers=coordinator).text
        assert f'<option value="effusion" data-models="{served.name}">effusion ({served.name})</option>' in designer
        # A label matches whatever its case or underscores; another finding is allowed, and the page says that no
        # served model reports it.
        for finding, says in (("pleural thickening", f"the AI arms show {served.name}'s probability of it"),
                              ("pneumothorax", "no model served on its images reports it")):
            study = create_study(app_client, coordinator, task="binary_finding", finding=finding)
            assert says in app_client.get(f"/reader-studies/{study['id']}", headers=coordinator).text
    finally:
        served.is_active = False
        db_session.commit()


def test_readers_are_asked_about_the_finding_and_the_ai_shows_its_probability(
    app_client, coordinator, make_chest_cases, readers, db_session
):
    # The model ranks emphysema first on every case: the arms must show effusion's probability, not its top label.
    cases = make_chest_cases([0.23, 0.61], [0.41, 0.52], [0.07, 0.88])
    ((user, headers),) = readers(1)
    study = create_study(app_client, coordinator, task="binary_finding", finding="effusion", conditions=EFFUSION_ARMS,
                         seed=3)
    _fill_and_open(app_client, coordinator, study_id=study["id"], cases=cases, references=["present", "1", "no"],
                   emails=[user.email])
    effusion = {case.instance_id: probabilities[0] for case, probabilities in zip(
        cases, ([0.23, 0.61], [0.41, 0.52], [0.07, 0.88]), strict=True)}
    seen = set()
    for _ in cases:
        item = next_assignment(app_client, headers, study["id"])
        view = app_client.get(f"/api/assignments/{item['id']}", headers=headers).json()
        kind, form = view["assignment"]["kind"], view["form"]
        assert (form["kind"], form["question"]) == ("presence", "Effusion present?")
        assert [(c["value"], c["label"]) for c in form["findings"]] == [("present", "Present"), ("absent", "Absent")]
        page = app_client.get(f"/assignments/{item['id']}/read", headers=headers).text
        assert '<legend id="finding-question">Effusion present?</legend>' in page and "Nodule" not in page
        [instance] = view["instances"]
        probability = effusion[instance["id"]]
        if kind == "unassisted":
            assert instance["assistance"] is None and "finding-probability" not in page
        else:
            shown = instance["assistance"]["study_finding"]
            assert shown == {"finding": "effusion", "words": "Effusion", "label": "effusion", "label_index": 0,
                             "probability": probability}
            assert instance["assistance"]["label"] == "emphysema"  # the model's top label is not what is shown
            assert f'<strong class="finding-probability">{probability * 100:.0f}%</strong>' in page
            # The heatmap arm's map explains the model's top label, and the page says so.
            assert ("explains the model's emphysema output, not effusion" in page) == (kind == "prediction_heatmap")
        refused = _submit(app_client, headers, item["id"], {"finding": "nodule", "confidence": 3})
        assert refused.status_code == 422 and "the presence form's findings are present, absent" in refused.text
        read = _submit(app_client, headers, item["id"], {"finding": "present", "confidence": 4})
        assert read.status_code == 201, read.text
        assert (read.json()["form"], read.json()["finding"]) == ("presence", "present")
        snapshot = db_session.get(Read, read.json()["id"]).ai_snapshot
        if kind == "unassisted":
            assert snapshot["finding"] is None and snapshot["finding_probability"] is None
        else:
            assert (snapshot["finding"], snapshot["finding_label_index"]) == ("effusion", 0)
            assert snapshot["finding_probability"] == probability and snapshot["label"] == "emphysema"
        seen.add(kind)
    assert seen == {"unassisted", "prediction", "prediction_heatmap"}

    as_csv = app_client.get(f"/api/reader-studies/{study['id']}/export.csv", headers=coordinator)
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    start = COLUMNS.index("ai_method") + 1  # the finding's columns came next; later ones come after them
    assert list(rows[0]) == list(COLUMNS) and list(COLUMNS[start : start + 2]) == list(FINDING_COLUMNS)
    assert {row["study_finding"] for row in rows} == {"effusion"}
    assert {row["reference_finding"] for row in rows} == {"present", "absent"}
    by_condition = {row["condition"]: row for row in rows}
    assert by_condition["unassisted"]["ai_finding_probability"] == ""
    for row in (by_condition["ai_effusion"], by_condition["ai_effusion_heatmap"]):
        assert row["ai_label"] == "emphysema" and float(row["ai_finding_probability"]) in effusion.values()
    as_json = app_client.get(f"/api/reader-studies/{study['id']}/export.json", headers=coordinator).json()
    assert as_json["finding"] == "effusion" and {row["study_finding"] for row in as_json["reads"]} == {"effusion"}
    for row in as_json["reads"]:
        shown = by_condition[row["condition"]]["ai_finding_probability"]
        assert row["ai_finding_probability"] == (float(shown) if shown else None)


def test_a_finding_the_model_does_not_report_shows_no_probability_of_it(
    app_client, coordinator, make_chest_cases, readers, db_session
):
    cases = make_chest_cases([0.3, 0.6], heatmaps=False)
    ((user, headers),) = readers(1)
    study = create_study(app_client, coordinator, task="binary_finding", finding="pneumothorax",
                         conditions=[{"key": "ai", "kind": "prediction"}])
    _fill_and_open(app_client, coordinator, study_id=study["id"], cases=cases, references=["absent"],
                   emails=[user.email])
    item = next_assignment(app_client, headers, study["id"])
    view = app_client.get(f"/api/assignments/{item['id']}", headers=headers).json()
    assert view["form"]["question"] == "Pneumothorax present?"
    assert view["instances"][0]["assistance"]["study_finding"] is None
    page = app_client.get(f"/assignments/{item['id']}/read", headers=headers).text
    assert "The model does not report “pneumothorax”" in page and "finding-probability" not in page
    read = _submit(app_client, headers, item["id"], {"finding": "absent", "confidence": 2})
    snapshot = db_session.get(Read, read.json()["id"]).ai_snapshot
    assert snapshot["finding"] == "pneumothorax" and snapshot["finding_probability"] is None
    assert snapshot["finding_label_index"] is None and snapshot["label"] == "emphysema"


def test_sensitivity_and_specificity_count_the_finding_present_as_positive(
    app_client, coordinator, make_chest_cases, readers
):
    cases = make_chest_cases(*([0.5, 0.5] for _ in range(5)), heatmaps=False)
    ((user, headers),) = readers(1)
    study = create_study(app_client, coordinator, task="binary_finding", finding="effusion",
                         conditions=[{"key": "unassisted", "kind": "unassisted"}])
    # Each spelling the reference CSV takes for a finding study: present/absent, 1/0, yes/no.
    bad = app_client.post(f"/api/reader-studies/{study['id']}/reference",
                          content=f"study_instance_uid,finding\n{cases[0].uid},nodule\n",
                          headers={**coordinator, **CSV})
    assert bad.status_code == 422
    assert "finding says whether effusion is present: present/absent, 1/0 or yes/no, not 'nodule'" in bad.text
    truth = ["present", "0", "yes", "1", "absent"]
    _fill_and_open(app_client, coordinator, study_id=study["id"], cases=cases, references=truth,
                   emails=[user.email])
    detail = app_client.get(f"/api/reader-studies/{study['id']}", headers=coordinator).json()
    assert [case["reference"]["finding"] for case in detail["case_list"]] == [
        "present", "absent", "present", "present", "absent"]
    answers = {cases[0].instance_id: "present", cases[1].instance_id: "absent", cases[2].instance_id: "absent",
               cases[3].instance_id: "present", cases[4].instance_id: "present"}
    for _ in cases:
        item = next_assignment(app_client, headers, study["id"])
        view = app_client.get(f"/api/assignments/{item['id']}", headers=headers).json()
        answer = answers[view["instances"][0]["id"]]
        assert _submit(app_client, headers, item["id"], {"finding": answer, "confidence": 3}).status_code == 201
    # By hand: present on C1, C3, C4 -> answered present, absent, present: 2 of 3; absent on C2, C5 -> answered
    # absent, present: 1 of 2; 3 of 5 right.
    [result] = app_client.get(f"/api/reader-studies/{study['id']}/statistics", headers=coordinator).json()[
        "conditions"]
    assert result["reads_with_reference"] == 5
    assert (result["sensitivity"], result["specificity"], result["accuracy"]) == pytest.approx((2 / 3, 1 / 2, 3 / 5))


def test_a_study_made_before_findings_were_named_keeps_the_nodule_form(
    app_client, coordinator, make_chest_cases, readers, db_session
):
    cases = make_chest_cases([0.2, 0.1], heatmaps=False)
    ((user, headers),) = readers(1)
    study = create_study(app_client, coordinator, task="binary_finding", finding="effusion",
                         conditions=[{"key": "unassisted", "kind": "unassisted"}])
    row = db_session.get(ReaderStudy, study["id"])
    row.finding = ""  # as revision 0012 left the binary-finding studies made before it
    db_session.commit()
    _fill_and_open(app_client, coordinator, study_id=study["id"], cases=cases, references=["nodule"],
                   emails=[user.email])
    item = next_assignment(app_client, headers, study["id"])
    form = app_client.get(f"/api/assignments/{item['id']}", headers=headers).json()["form"]
    assert (form["kind"], form["question"]) == ("finding", "")
    assert [c["value"] for c in form["findings"]] == ["nodule", "no_nodule", "other"]
    assert _submit(app_client, headers, item["id"], {"finding": "nodule", "confidence": 3}).status_code == 201
    [result] = app_client.get(f"/api/reader-studies/{study['id']}/statistics", headers=coordinator).json()[
        "conditions"]
    assert (result["sensitivity"], result["accuracy"]) == (1.0, 1.0)
    assert db_session.scalar(select(Read.form).where(Read.assignment_id == item["id"])) == "finding"
