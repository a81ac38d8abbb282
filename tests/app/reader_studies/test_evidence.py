"""Readers' own evidence in a reader study (app/reader_studies/evidence.py), on real Postgres through the API: each
read's marks against each heatmap of its case, means over cases per method and condition, inter-reader Dice, the
dashboard's table and the evidence export. Every expected number is worked out by hand below."""

from __future__ import annotations

import csv
import io
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.reader_studies.evidence import HEATMAP_COLUMNS, PAIR_COLUMNS
from app.tables import Heatmap, Read
from tests.app.auth.helpers import sign_in
from tests.app.reader_studies.conftest import next_assignment, open_study

DR = {"dr_grade": 2, "dme": False, "confidence": 3}
# The 4 x 4 map of tests/app/statistics/test_evidence.py: positive relevance 16, maximum 4 at (1, 1); the top four
# cells are (1, 1), (1, 2), (0, 2), (2, 1).
GRADCAM = np.array([[0, 1, 2, 0], [1, 4, 3, 0], [-2, 2, 1, 0], [0, 0, 0, 2]], dtype=np.float16)
# Rows 0-1 and columns 1-2 of the 4 x 4 grid: relevance 10 / 16, the maximum inside, IoU 3 / 5.
BOX_A = [0.3, 0.1, 0.7, 0.4]
# Rows 0-1 and columns 2-3: relevance 5 / 16, the maximum outside, top-4 overlap 2 of a union of 6.
BOX_B = [0.55, 0.1, 0.95, 0.4]
# On the 64 x 96 image the boxes hold rows 6-25 (20) and columns 29-66 (A) and 53-90 (B), 38 each, 14 shared:
# Dice = 2 * 14 * 20 / (38 * 20 + 38 * 20) = 28 / 76.
DICE_AB = 28 / 76


def _set_maps(db_session, cases) -> None:
    """gradcam: GRADCAM; integrated_gradients: all zero (no positive relevance: every statistic undefined)."""
    for case in cases:
        for method, array in (("gradcam", GRADCAM), ("integrated_gradients", np.zeros((4, 4), np.float16))):
            row = db_session.get(Heatmap, case.heatmaps[method])
            row.shape, row.data = [4, 4], array.tobytes()
            row.value_min, row.value_max = float(array.min()), float(array.max())
    db_session.commit()


def _box(instance_id: int, box: list[float]) -> dict:
    return {"kind": "box", "instance_id": instance_id, "frame": 0, "box": box}


def _read_all(client, headers, study: dict, marks_for) -> None:
    """Submit every assignment of the reader in queue order, with the marks `marks_for(case, condition)` gives."""
    instances = {case["pseudonym"]: case["instance_id"] for case in study["case_list"]}
    queue = client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()
    for item in queue["assignments"]:
        box = marks_for(item["case"], item["condition"])
        body = {"answers": DR, "evidence_marks": [_box(instances[item["case"]], box)] if box else []}
        done = client.post(f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit", json=body, headers=headers)
        assert done.status_code == 201, done.text


def _csv(client, url: str, headers) -> list[dict]:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def test_evidence_statistics_per_method_and_between_readers(app_client, coordinator, make_cases, readers, db_session):
    cases = make_cases(2)
    _set_maps(db_session, cases)
    (r1, h1), (r2, h2) = readers(2)
    conditions = [{"key": "unassisted", "kind": "unassisted", "label": "Unassisted"}]
    study = open_study(app_client, coordinator, cases=cases, reader_users=[r1, r2], conditions=conditions)
    first, second = (case["pseudonym"] for case in study["case_list"])
    # R01 marks box A on the first case and nothing on the second; R02 box B on the first, the whole second image.
    _read_all(app_client, h1, study, lambda case, _: BOX_A if case == first else None)
    _read_all(app_client, h2, study, lambda case, _: BOX_B if case == first else [0.0, 0.0, 1.0, 1.0])

    numbers = app_client.get(f"/api/reader-studies/{study['id']}/statistics", headers=coordinator).json()["evidence"]
    assert (numbers["reads"], numbers["reads_marked"]) == (4, 3)
    by_method = {item["method"]: item for item in numbers["methods"]}
    assert set(by_method) == {"gradcam", "integrated_gradients"}
    gradcam = by_method["gradcam"]["overall"]
    # First case: R01 (10/16, hit, 3/5) and R02 (5/16, miss, 2/6) averaged; second case: R02 alone, whole image (1,
    # hit, 1); R01's empty read there is undefined. Then the mean of the two cases.
    assert gradcam["relevance_mass"] == pytest.approx(((10 / 16 + 5 / 16) / 2 + 1) / 2)
    assert gradcam["pointing_game"] == pytest.approx(((1 + 0) / 2 + 1) / 2)
    assert gradcam["iou_equal_area"] == pytest.approx(((3 / 5 + 2 / 6) / 2 + 1) / 2)
    assert (gradcam["cases"], gradcam["reads"]) == (2, 3)
    [by_condition] = by_method["gradcam"]["by_condition"]
    assert by_condition["condition"] == "unassisted" and by_condition["relevance_mass"] == gradcam["relevance_mass"]
    # An all-zero map points nowhere: undefined, never NaN, and no case counts.
    zero = by_method["integrated_gradients"]["overall"]
    assert zero == {"relevance_mass": None, "pointing_game": None, "iou_equal_area": None, "cases": 0, "reads": 0}
    # Dice: only the first case has two readers who marked it.
    assert numbers["dice"]["overall"]["dice"] == pytest.approx(DICE_AB)
    assert (numbers["dice"]["overall"]["cases"], numbers["dice"]["overall"]["pairs"]) == (1, 1)

    # The export, one row per read and method, and one per pair of readers.
    rows = _csv(app_client, f"/api/reader-studies/{study['id']}/evidence.csv", coordinator)
    assert len(rows) == 4 * 2 and tuple(rows[0]) == HEATMAP_COLUMNS
    row = next(r for r in rows if (r["reader"], r["case"], r["method"]) == ("R01", first, "gradcam"))
    assert (row["marks"], row["grid_rows"], row["grid_columns"], row["marked_fraction"]) == ("1", "4", "4", "0.25")
    assert float(row["relevance_mass"]) == 0.625 and float(row["pointing_game"]) == 1.0
    assert float(row["iou_equal_area"]) == pytest.approx(0.6)
    empty = next(r for r in rows if (r["reader"], r["case"], r["method"]) == ("R01", second, "gradcam"))
    assert (empty["marks"], empty["relevance_mass"], empty["pointing_game"]) == ("0", "", "")
    [pair] = _csv(app_client, f"/api/reader-studies/{study['id']}/evidence.csv?table=pairs", coordinator)
    assert tuple(pair) == PAIR_COLUMNS
    assert (pair["case"], pair["reader_a"], pair["reader_b"], pair["grid_rows"], pair["grid_columns"]) == (
        first,
        "R01",
        "R02",
        "64",
        "96",
    )
    assert float(pair["dice"]) == pytest.approx(DICE_AB)
    assert (
        app_client.get(f"/api/reader-studies/{study['id']}/evidence.csv?table=other", headers=coordinator).status_code
        == 422
    )
    assert app_client.get(f"/api/reader-studies/{study['id']}/evidence.csv", headers=h1).status_code == 403
    # The long export counts each read's marks.
    long = _csv(app_client, f"/api/reader-studies/{study['id']}/export.csv", coordinator)
    assert sorted((r["reader"], r["case"], r["evidence_marks"]) for r in long) == sorted(
        [("R01", first, "1"), ("R01", second, "0"), ("R02", first, "1"), ("R02", second, "1")]
    )


def test_evidence_per_condition_and_the_dashboard_table(
    app_client, coordinator, make_cases, readers, make_user, db_session
):
    cases = make_cases(1)
    _set_maps(db_session, cases)
    (r1, h1), (r2, h2) = readers(2)
    conditions = [
        {"key": "unaided", "kind": "unassisted", "label": "Unaided"},
        {"key": "aided", "kind": "prediction_heatmap", "method": "gradcam", "label": "Aided"},
    ]
    study = open_study(
        app_client, coordinator, cases=cases, reader_users=[r1, r2], conditions=conditions, scheme="crossed"
    )
    # Each reads the case under both conditions: R01 box A both times, R02 box B unaided and box A aided.
    _read_all(app_client, h1, study, lambda case, condition: BOX_A)
    _read_all(app_client, h2, study, lambda case, condition: BOX_B if condition == "unaided" else BOX_A)

    numbers = app_client.get(f"/api/reader-studies/{study['id']}/statistics", headers=coordinator).json()["evidence"]
    gradcam = next(item for item in numbers["methods"] if item["method"] == "gradcam")
    split = {row["condition"]: row for row in gradcam["by_condition"]}
    assert split["unaided"]["relevance_mass"] == pytest.approx((10 / 16 + 5 / 16) / 2)
    assert split["aided"]["relevance_mass"] == pytest.approx(10 / 16)
    assert (split["aided"]["cases"], split["aided"]["reads"]) == (1, 2)
    dice = {row["condition"]: row for row in numbers["dice"]["by_condition"]}
    assert dice["unaided"]["dice"] == pytest.approx(DICE_AB) and dice["aided"]["dice"] == 1.0
    # Pooled: the four pairs of reads by different readers (one reader's two reads are not a pair).
    assert numbers["dice"]["overall"]["pairs"] == 4
    assert numbers["dice"]["overall"]["dice"] == pytest.approx((2 * DICE_AB + 2 * 1.0) / 4)

    person, _ = make_user("coordinator")
    with TestClient(app_client.app) as browser:
        sign_in(browser, person.email)
        page = browser.get(f"/reader-studies/{study['id']}")
    assert page.status_code == 200
    html = page.text
    assert "Readers' evidence vs heatmaps" in html
    row = html.split('<tr data-method="gradcam" data-condition="aided">')[1].split("</tr>")[0]
    assert "0.625" in row and "1.000" in row  # relevance mass 10/16; pointing game: both hit
    dice_row = html.split('id="evidence-dice-table"')[1].split('<tr data-condition="unaided">')[1].split("</tr>")[0]
    assert f"{DICE_AB:.3f}" in dice_row


def test_a_reader_study_read_keeps_its_marks_on_the_case_image(
    app_client, coordinator, make_cases, readers, db_session
):
    cases = make_cases(1)
    ((user, headers),) = readers(1)
    conditions = [{"key": "unassisted", "kind": "unassisted"}]
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], conditions=conditions)
    assignment = next_assignment(app_client, headers, study["id"])
    client_id = str(uuid.uuid4())
    url = f"/api/assignments/{assignment['id']}/reads/{client_id}"
    marks = [_box(cases[0].instance_id, BOX_A), _box(cases[0].instance_id, BOX_B)]
    [other] = make_cases(1)
    elsewhere = app_client.put(url, json={"evidence_marks": [_box(other.instance_id, BOX_A)]}, headers=headers)
    assert elsewhere.status_code == 422 and "not an image of this read" in elsewhere.json()["detail"]
    draft = app_client.put(url, json={"evidence_marks": marks}, headers=headers)
    assert draft.status_code == 201, draft.text
    view = app_client.get(f"/api/assignments/{assignment['id']}", headers=headers).json()
    assert view["read"]["evidence_marks"] == marks  # re-shown when the page is opened again
    done = app_client.post(f"{url}/submit", json={"answers": DR}, headers=headers)
    assert done.status_code == 201 and done.json()["evidence_marks"] == marks
    assert db_session.scalar(select(Read).where(Read.client_id == client_id)).evidence_marks == marks
