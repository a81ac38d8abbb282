"""A service's refusal becomes one answer everywhere (app/http_errors.py): `{"detail": ...}` with its status for
the API, its page for a browser, with the signed-in user still in the top bar after the request rolled back."""

from __future__ import annotations


def test_the_api_answers_json_with_the_status_of_the_error(app_client, auth_headers) -> None:
    headers = auth_headers("coordinator")

    missing = app_client.get("/api/studies/987654", headers=headers)
    unknown_method = app_client.post("/api/jobs", json={"instance_id": 1, "methods": ["nope"]}, headers=headers)

    assert missing.status_code == 404 and missing.json() == {"detail": "study 987654 does not exist"}
    assert unknown_method.status_code == 422 and "unknown methods ['nope']" in unknown_method.json()["detail"]


def test_a_page_answers_with_the_page_of_the_error_and_who_is_signed_in(app_client, make_user) -> None:
    user, token = make_user("coordinator")
    headers = {"Authorization": f"Bearer {token}"}

    study = app_client.get("/studies/987654", headers=headers)
    reader_study = app_client.get("/reader-studies/987654", headers=headers)

    assert study.status_code == 404 and "Study 987654 does not exist" in study.text
    assert reader_study.status_code == 404 and "reader study 987654 does not exist" in reader_study.text
    assert "Not available" in reader_study.text  # the reader-study pages' own refusal page
    for page in (study, reader_study):
        assert page.headers["content-type"].startswith("text/html") and user.email in page.text
