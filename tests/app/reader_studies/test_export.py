"""The CSV export is safe to open in a spreadsheet: a text cell that a spreadsheet would run as a formula
(=, +, -, @, tab, CR first) starts with a single quote (OWASP, CSV injection); numbers stay numbers; the JSON
export keeps the text as it was entered."""

from __future__ import annotations

import csv
import io
import uuid

import pytest

from app.reader_studies.export import csv_cell, to_csv
from tests.app.reader_studies.conftest import open_study

HYPERLINK = '=HYPERLINK("http://x")'


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (HYPERLINK, "'" + HYPERLINK),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("-5", "'-5"),  # text that looks like a number is still text
        ("a=b", "a=b"),
        ("plain comment", "plain comment"),
        ("", ""),
        (-3, -3),
        (-0.25, -0.25),
        (0, 0),
        (True, "true"),
        (False, "false"),
        (None, ""),
    ],
)
def test_a_cell_that_a_spreadsheet_would_run_starts_with_a_quote(value: object, cell: object) -> None:
    assert csv_cell(value) == cell


def test_negative_numbers_are_written_as_numbers() -> None:
    text = to_csv([{"study": "s", "seconds": -1.5, "order": -2, "rating_comment": "-1.5"}])
    row = next(csv.DictReader(io.StringIO(text)))
    assert (row["seconds"], row["order"], row["rating_comment"]) == ("-1.5", "-2", "'-1.5")


def test_a_formula_typed_by_a_reader_is_exported_inert(app_client, coordinator, make_cases, readers):
    cases = make_cases(1)
    (user, headers), = readers(1)
    conditions = [{"key": "heatmap", "kind": "prediction_heatmap", "method": "gradcam"}]
    study = open_study(app_client, coordinator, cases=cases, reader_users=[user], grades=[2],
                       conditions=conditions, name=f"@study-{uuid.uuid4().hex[:6]}")
    item = app_client.get(f"/api/reader-studies/{study['id']}/queue", headers=headers).json()["assignments"][0]
    view = app_client.get(f"/api/assignments/{item['id']}", headers=headers).json()
    heatmap_id = view["instances"][0]["assistance"]["heatmaps"][0]["id"]
    rating = {"client_id": str(uuid.uuid4()), "heatmap_id": heatmap_id, "answers": {"trust": 2},
              "comment": HYPERLINK}
    rated = app_client.post(f"/api/assignments/{item['id']}/ratings", json=rating, headers=headers)
    assert rated.status_code == 201, rated.text
    read = {"study_id": cases[0].study_id, "answers": {"dr_grade": 2, "dme": False, "confidence": 3},
            "time_spent_seconds": 12.5, "assistance": {"visible": True}}
    submitted = app_client.post(f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit", json=read,
                                headers=headers)
    assert submitted.status_code == 201, submitted.text

    exported = app_client.get(f"/api/reader-studies/{study['id']}/export.csv", headers=coordinator)
    [row] = list(csv.DictReader(io.StringIO(exported.text)))
    assert row["rating_comment"] == "'" + HYPERLINK
    assert row["study"] == "'" + study["name"]
    assert (row["dr_grade"], row["seconds"], row["rating_trust"]) == ("2", "12.5", "2")

    as_json = app_client.get(f"/api/reader-studies/{study['id']}/export.json", headers=coordinator).json()
    assert as_json["reads"][0]["rating_comment"] == HYPERLINK
    assert as_json["study"] == study["name"]
