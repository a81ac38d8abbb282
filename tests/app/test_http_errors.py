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


def test_an_image_whose_stored_file_is_gone_answers_404_with_the_reason(app_client, auth_headers) -> None:
    from sqlalchemy import update

    from app.db import session_scope
    from app.tables import Instance
    from tests.app.viewer import factories

    with session_scope() as session:
        stored = factories.insert_study(session, data=factories.png_bytes(), source_format="png", rows=48, columns=64)
    with session_scope() as session:
        session.execute(update(Instance).where(Instance.id == stored.instance_id).values(storage_key="gone"))
    response = app_client.get(f"/api/instances/{stored.instance_id}/image.png", headers=auth_headers("admin"))
    assert response.status_code == 404
    assert response.json()["detail"] == (
        "the stored file of this image is missing from the blob store (no blob under the key 'gone')")
