"""The onboarding API without a worker: what is refused at once, what is stored, what is sent, who may."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db import session_scope
from app.tables import ModelOnboarding, OnboardingState
from tests.conftest import broker_redis, queue_key

ANSWERS = {
    "name": "api-test-model", "version": "1.0.0", "labels": ["absent", "present"], "modalities": ["XC"],
    "body_part": "eye fundus", "size": [28, 28], "training_data": "a test", "licence": "CC0",
}


@pytest.fixture(autouse=True)
def no_onboarding_left_for_a_worker() -> Iterator[None]:
    """The onboardings sent here hold no real model: their messages are taken back, so that a later test's worker
    does not spend its time failing them."""
    yield
    redis = broker_redis()
    for raw in redis.lrange(queue_key("gpu"), 0, -1):
        if json.loads(raw)["headers"]["task"] == "lumen.onboard_model":
            redis.lrem(queue_key("gpu"), 0, raw)


def _post(app_client, headers, *, filename="model.ts", data=b"PK\x03\x04 not a real model", answers=None, **files):
    sent = {"model": (filename, data, "application/octet-stream"), **files}
    return app_client.post("/api/onboardings", headers=headers, files=sent,
                           data={"answers": json.dumps(answers or ANSWERS)})


def _rows(name: str) -> int:
    with session_scope(writes=False) as session:
        return session.query(ModelOnboarding).filter_by(name=name).count()


def test_an_onnx_file_is_refused_at_once_with_the_reason_and_nothing_is_stored(app_client, auth_headers) -> None:
    answers = {**ANSWERS, "name": "onnx-refused"}
    response = _post(app_client, auth_headers("coordinator"), filename="net.onnx", answers=answers)
    assert response.status_code == 422
    assert "ONNX" in response.json()["detail"] and "TorchScript" in response.json()["detail"]
    assert _rows("onnx-refused") == 0


def test_answers_that_do_not_fit_name_their_field(app_client, auth_headers) -> None:
    response = _post(app_client, auth_headers(), answers={**ANSWERS, "labels": ["only-one"], "size": [28]})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "labels" in detail and "size" in detail


def test_an_upload_is_stored_and_sent_to_a_worker(app_client, auth_headers) -> None:
    redis = broker_redis()
    before = redis.llen(queue_key("gpu"))
    validation = ("val.zip", b"PK\x05\x06" + b"\0" * 18, "application/zip")
    response = _post(app_client, auth_headers("coordinator"), answers={**ANSWERS, "name": "stored-and-sent"},
                     validation=validation)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["state"] == "inspecting" and body["filename"] == "model.ts"
    with session_scope(writes=False) as session:
        row = session.get(ModelOnboarding, body["id"])
        folder = Path(row.folder)
    assert (folder / "upload" / "model.ts").read_bytes() == b"PK\x03\x04 not a real model"
    assert (folder / "validation.zip").is_file()
    sent = [json.loads(raw) for raw in redis.lrange(queue_key("gpu"), 0, -1)]
    tasks = [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in sent]
    assert ("lumen.onboard_model", [body["id"]]) in tasks, (before, tasks)


def test_a_labelled_set_that_is_not_a_zip_is_refused(app_client, auth_headers) -> None:
    response = _post(app_client, auth_headers(), answers={**ANSWERS, "name": "bad-labelled-set"},
                     validation=("labels.csv", b"image,label\n", "text/csv"))
    assert response.status_code == 422 and ".zip" in response.json()["detail"]
    assert _rows("bad-labelled-set") == 0


def test_a_shipped_model_version_cannot_be_replaced(app_client, auth_headers) -> None:
    from app.ai_models.sync import sync_now

    sync_now()
    response = _post(app_client, auth_headers(), answers={**ANSWERS, "name": "dr-grading-retinamnist"})
    assert response.status_code == 409
    assert "new version" in response.json()["detail"]


def test_readers_may_not_bring_models_in(app_client, auth_headers) -> None:
    assert _post(app_client, auth_headers("reader"), answers={**ANSWERS, "name": "by-a-reader"}).status_code == 403
    assert app_client.get("/api/onboardings", headers=auth_headers("reader")).status_code == 403


def test_confirming_an_onboarding_that_does_not_wait_for_it_is_a_conflict(app_client, auth_headers) -> None:
    headers = auth_headers()
    body = _post(app_client, headers, answers={**ANSWERS, "name": "not-yet-proposed"}).json()
    response = app_client.post(f"/api/onboardings/{body['id']}/confirm", headers=headers, json={"target_layer": ""})
    assert response.status_code == 409 and "inspecting" in response.json()["detail"]
    with session_scope() as session:  # not left in flight for the other tests' version checks
        session.get(ModelOnboarding, body["id"]).state = OnboardingState.failed
