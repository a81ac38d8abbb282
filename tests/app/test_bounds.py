"""Input bounds at the schema (app/bounds.py): ids past a Postgres integer, offsets past any list and NUL bytes
in text are answered 422 (the error page for a browser), never a 500 from the database."""

from __future__ import annotations

import uuid

import pytest
from pydantic import TypeAdapter, ValidationError

from app.bounds import MAX_INT32, DbId, FreeText, JsonDetail, parse_db_id
from tests.app.viewer import factories

TOO_BIG = 2**31  # one past the largest Postgres integer: "integer out of range" if it reached the database


def test_the_annotated_types_refuse_what_postgres_cannot_hold() -> None:
    ids = TypeAdapter(DbId)
    assert ids.validate_python(MAX_INT32) == MAX_INT32
    for bad in (0, -1, TOO_BIG, 2**63):
        with pytest.raises(ValidationError):
            ids.validate_python(bad)
    text = TypeAdapter(FreeText)
    assert text.validate_python("café ✓\ttab") == "café ✓\ttab"
    with pytest.raises(ValidationError, match="NUL"):
        text.validate_python("a\x00b")
    detail = TypeAdapter(JsonDetail)
    assert detail.validate_python({"method": "gradcam", "at": [1, {"x": "y"}]}) == {"method": "gradcam",
                                                                                     "at": [1, {"x": "y"}]}
    for bad_detail in ({"a": ["ok", "b\x00"]}, {"k\x00": 1}, {"deep": _nested(12)}):
        with pytest.raises(ValidationError):
            detail.validate_python(bad_detail)


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12", 12), (" 7 ", 7), (str(MAX_INT32), MAX_INT32), (str(TOO_BIG), None), ("0", None), ("-3", None),
     ("1e3", None), ("٣", None), ("²", None), ("", None), ("99999999999999999999", None)],
)
def test_parse_db_id_reads_only_ascii_ids_that_can_exist(text: str, expected: int | None) -> None:
    assert parse_db_id(text) == expected


ID_PATHS = [
    "/api/studies/{id}",
    "/api/jobs/{id}",
    "/api/instances/{id}/prediction",
    "/api/instances/{id}/image.png",
    "/api/instances/{id}/pixels",
    "/api/heatmaps/{id}.png",
    "/api/heatmaps/{id}/data",
    "/api/worklist/{id}",
    "/api/reader-studies/{id}",
    "/api/reader-studies/{id}/queue",
    "/api/reader-studies/{id}/export.csv",
    "/api/assignments/{id}",
]


@pytest.mark.parametrize("path", ID_PATHS)
def test_an_id_past_a_postgres_integer_is_a_422_that_names_it(app_client, auth_headers, path: str) -> None:
    headers = auth_headers("admin")
    response = app_client.get(path.format(id=TOO_BIG), headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "path"
    largest = app_client.get(path.format(id=MAX_INT32), headers=headers)
    assert largest.status_code == 404, largest.text  # in range: looked up, and not there


def test_query_offsets_and_frames_are_bounded(app_client, auth_headers, db_session) -> None:
    headers = auth_headers("reader")
    stored = factories.done_study(db_session)
    db_session.commit()
    assert app_client.get(f"/api/studies?offset={TOO_BIG}", headers=headers).status_code == 422
    assert app_client.get(f"/api/studies?offset={2**70}", headers=headers).status_code == 422
    assert app_client.get(f"/api/studies?offset={MAX_INT32}", headers=headers).json() == []
    for path in (f"/api/instances/{stored.instance_id}/pixels", f"/api/heatmaps/{stored.heatmap_id}/data"):
        assert app_client.get(f"{path}?frame={TOO_BIG}", headers=headers).status_code == 422
        assert app_client.get(f"{path}?frame={MAX_INT32}", headers=headers).status_code == 404  # no such frame


def test_ids_in_bodies_are_bounded(app_client, auth_headers) -> None:
    admin, reader = auth_headers("admin"), auth_headers("reader")
    job = app_client.post("/api/jobs", json={"instance_id": TOO_BIG, "methods": ["gradcam"]}, headers=reader)
    assert job.status_code == 422 and job.json()["detail"][0]["loc"] == ["body", "instance_id"]
    read = app_client.put(f"/api/reads/{uuid.uuid4()}", json={"study_id": TOO_BIG}, headers=reader)
    assert read.status_code == 422
    rating = {"client_id": str(uuid.uuid4()), "heatmap_id": TOO_BIG, "answers": {"trust": 3}}
    assert app_client.post("/api/ratings", json=rating, headers=reader).status_code == 422
    events = {"events": [{"event": "shown", "study_id": 1, "instance_id": TOO_BIG}]}
    assert app_client.post("/api/assistance-events", json=events, headers=reader).status_code == 422
    study = app_client.post("/api/reader-studies", json={"name": f"bounds {uuid.uuid4()}"}, headers=admin).json()
    cases = app_client.post(f"/api/reader-studies/{study['id']}/cases", json={"study_ids": [1, TOO_BIG]},
                            headers=admin)
    assert cases.status_code == 422 and cases.json()["detail"][0]["loc"] == ["body", "study_ids", 1]


def test_nul_bytes_in_text_are_refused_before_the_database(app_client, auth_headers) -> None:
    admin, reader = auth_headers("admin"), auth_headers("reader")
    named = app_client.post("/api/reader-studies", json={"name": "a\x00b"}, headers=admin)
    assert named.status_code == 422 and "NUL" in named.text
    study = app_client.post("/api/reader-studies", json={"name": f"nul {uuid.uuid4()}"}, headers=admin).json()
    readers = app_client.post(f"/api/reader-studies/{study['id']}/readers", json={"emails": ["x\x00@example.org"]},
                              headers=admin)
    assert readers.status_code == 422 and "NUL" in readers.text
    note = app_client.put(f"/api/reads/{uuid.uuid4()}", json={"study_id": 1, "answers": {"note": "\x00"}},
                          headers=reader)
    assert note.status_code == 422
    event = {"events": [{"event": "shown", "study_id": 1, "detail": {"why": "\x00"}}]}
    assert app_client.post("/api/assistance-events", json=event, headers=reader).status_code == 422
    url, csv_headers = f"/api/reader-studies/{study['id']}/reference", {**admin, "Content-Type": "text/csv"}
    csv = app_client.post(url, content="study_id,dr_grade\n1\x00,2\n", headers=csv_headers)
    assert csv.status_code == 422 and "NUL" in csv.json()["detail"]
    huge_id = app_client.post(url, content=f"study_id,dr_grade\n{TOO_BIG},2\n", headers=csv_headers)
    assert huge_id.status_code == 422 and f"no stored study {TOO_BIG}" in huge_id.json()["detail"]


def test_a_page_with_an_id_out_of_range_answers_the_error_page(app_client, make_user) -> None:
    user, token = make_user("admin")
    headers = {"Authorization": f"Bearer {token}"}
    for path in (f"/studies/{TOO_BIG}", f"/studies/{TOO_BIG}/read", f"/reader-studies/{TOO_BIG}",
                 f"/assignments/{TOO_BIG}/read", f"/admin/models/{TOO_BIG}", "/admin/audit?email=%00"):
        page = app_client.get(path, headers=headers)
        assert page.status_code == 422, path
        assert page.headers["content-type"].startswith("text/html"), path
        assert "does not fit this page" in page.text and user.email in page.text, path
