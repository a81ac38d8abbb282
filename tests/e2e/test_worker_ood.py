"""End to end on Postgres + Redis: a chest radiograph uploaded as a photograph reaches the fundus model, and a
real Celery worker process refuses it at the model's input-domain gate: the job ends done, with no prediction."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from app.ai_models import sync as models_sync
from tests.conftest import broker_redis, queue_key
from tests.e2e.helpers import wait_for
from tests.processes import LoggedProcess, start_lumen

pytestmark = pytest.mark.slow

RADIOGRAPH = Path(__file__).resolve().parents[2] / "data" / "cxr" / "00000001_000.png"


@pytest.fixture(scope="module")
def worker() -> Iterator[LoggedProcess]:
    """A real `lumen worker` process on the test database and this session's Redis namespace (earlier tests'
    queued messages dropped first, as in test_worker_e2e)."""
    models_sync.sync_now()
    broker_redis().delete(queue_key("gpu"), queue_key("cpu"))
    process = start_lumen("worker-ood", "worker", "--queues", "gpu,cpu")
    yield process
    assert process.stop() == 0, f"the worker did not stop cleanly; see {process.log_path}"


def _fresh_png(path: Path) -> bytes:
    """The real radiograph re-encoded with a random text chunk, so that its sha256 is new (uploads are
    de-duplicated by content)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("nonce", secrets.token_hex(8))
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _upload(app_client, headers, **origin: str) -> dict:
    upload = app_client.post(
        "/api/studies",
        files=[("files", ("chest.png", _fresh_png(RADIOGRAPH), "image/png"))],
        data=origin,
        headers=headers,
    )
    assert upload.status_code == 201, upload.text
    return upload.json()


def _finished(app_client, headers, job_id: int) -> dict:
    def finished() -> dict | None:
        job = app_client.get(f"/api/jobs/{job_id}", headers=headers).json()
        return job if job["state"] in ("done", "failed") else None

    return wait_for(finished, timeout=120, what="the worker to finish the radiograph's job")


def test_a_chest_png_sent_to_the_fundus_model_ends_without_a_prediction(worker, app_client, auth_headers) -> None:
    headers = auth_headers("admin")
    # Said to be a fundus photograph (a wrong choice in the upload form): routing alone sends it to the DR model.
    body = _upload(app_client, headers, modality="OP", body_part="EYE")
    [instance] = body["instances"]
    assert instance["modality"] == "OP"
    [job_id] = body["job_ids"]
    job = _finished(app_client, headers, job_id)
    assert (job["state"], job["error"]) == ("done", "")
    assert job["timings"]["out_of_domain"] == 1.0
    assert job["timings"]["ood_score"] > job["timings"]["ood_threshold"]
    response = app_client.get(f"/api/instances/{instance['id']}/prediction", headers=headers)
    assert response.status_code == 404
    log = worker.log_path.read_text()
    assert f"job {job_id} (instance {instance['id']}): outside this model's domain" in log


def test_the_same_png_as_a_chest_radiograph_gets_the_chest_models_prediction(worker, app_client, auth_headers):
    headers = auth_headers("admin")
    body = _upload(app_client, headers, modality="CR", body_part="CHEST")
    [instance] = body["instances"]
    [job_id] = body["job_ids"]
    job = _finished(app_client, headers, job_id)
    assert (job["state"], job["timings"]["out_of_domain"]) == ("done", 0.0)
    prediction = app_client.get(f"/api/instances/{instance['id']}/prediction", headers=headers).json()
    assert prediction["model"] == "cxr-nih14" and prediction["labels"] == ["effusion", "emphysema"]
