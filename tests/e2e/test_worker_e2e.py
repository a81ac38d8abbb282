"""End to end on Postgres + Redis: upload through the API, a real Celery worker process predicts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app.ai_models import sync as models_sync
from app.config import get_settings
from app.db import session_scope
from app.tables import Heatmap, Instance
from tests.conftest import broker_redis, queue_key
from tests.e2e.helpers import DEMO, FUNDUS_IN_DOMAIN, fresh_dicom, fresh_jpeg, wait_for
from tests.processes import LoggedProcess, start_lumen

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker() -> Iterator[LoggedProcess]:
    """A real `lumen worker` process on the test database and this session's Redis namespace.

    Earlier tests' uploads left their messages in the session's queues (no worker ran for them): they are
    dropped first, so the worker starts on this module's jobs and not behind a backlog of others'.
    """
    models_sync.sync_now()
    broker_redis().delete(queue_key("gpu"), queue_key("cpu"))
    process = start_lumen("worker", "worker", "--queues", "gpu,cpu")
    yield process
    assert process.stop() == 0, f"the worker did not stop cleanly; see {process.log_path}"


def _done_prediction(client, headers, instance_id: int, job_id: int | None = None):
    """The image's prediction once it is there (and, given a job, once the job has finished: the prediction is
    stored first, its maps and their scores after it, workers/stages.py)."""
    if job_id is not None and client.get(f"/api/jobs/{job_id}", headers=headers).json()["state"] != "done":
        return None
    response = client.get(f"/api/instances/{instance_id}/prediction", headers=headers)
    return response.json() if response.status_code == 200 else None


def test_fundus_dicom_and_jpeg_get_a_stored_prediction_and_heatmap(
    worker, app_client, auth_headers, test_output
) -> None:
    headers = auth_headers("admin")
    files = [
        ("files", ("IDRiD_01_OP.dcm", fresh_dicom(DEMO / "IDRiD_01_OP_jpegbaseline.dcm"), "application/dicom")),
    ]
    started = time.monotonic()
    dicom_upload = app_client.post("/api/studies", files=files, headers=headers)
    assert dicom_upload.status_code == 201, dicom_upload.text
    jpeg = fresh_jpeg(FUNDUS_IN_DOMAIN)
    jpeg_upload = app_client.post(
        "/api/studies", files=[("files", ("fundus.jpg", jpeg, "image/jpeg"))], headers=headers
    )
    assert jpeg_upload.status_code == 201, jpeg_upload.text

    timings = {}
    for name, upload in (("dicom_op", dicom_upload.json()), ("jpeg", jpeg_upload.json())):
        [instance] = upload["instances"]
        assert instance["modality"] == "OP"
        assert len(upload["job_ids"]) == 1
        prediction = wait_for(
            lambda instance=instance, upload=upload: _done_prediction(
                app_client, headers, instance["id"], upload["job_ids"][0]),
            timeout=120, what=f"the worker's prediction for {name}",
        )
        timings[f"{name}_upload_to_prediction_s"] = round(time.monotonic() - started, 2)
        job = app_client.get(f"/api/jobs/{upload['job_ids'][0]}", headers=headers).json()
        assert (job["state"], job["progress"], job["error"]) == ("done", 100, "")
        assert len(prediction["probabilities"]) == len(prediction["labels"]) == 5
        assert abs(sum(prediction["probabilities"]) - 1) < 1e-4
        assert prediction["label"] == prediction["labels"][int(np.argmax(prediction["probabilities"]))]
        assert sorted(h["method"] for h in prediction["heatmaps"]) == sorted(get_settings().default_methods)
        with session_scope() as session:
            gradcam = next(h for h in prediction["heatmaps"] if h["method"] == "gradcam")
            heatmap = session.get(Heatmap, gradcam["id"])
            array = np.frombuffer(heatmap.data, dtype=np.float16).reshape(heatmap.shape)
            assert array.ndim == 2 and np.isfinite(array).all()
            assert float(array.max()) == pytest.approx(heatmap.value_max, rel=1e-2, abs=1e-3)
    (test_output / "e2e_timings.json").write_text(json.dumps(timings, indent=2))


def test_a_radiograph_gets_one_probability_per_finding_from_the_chest_model(
    worker, app_client, auth_headers
) -> None:
    """A CR radiograph goes to cxr-nih14, the chest model served automatically for CR/DX (cxr-demo is not):
    a multilabel prediction, one calibrated presence probability per finding, labelled with the top one."""
    headers = auth_headers("admin")
    upload = app_client.post(
        "/api/studies",
        files=[("files", ("RG1_J2KI.dcm", fresh_dicom(DEMO / "RG1_J2KI.dcm"), "application/dicom"))],
        headers=headers,
    )
    assert upload.status_code == 201, upload.text
    body = upload.json()
    [instance] = body["instances"]
    assert (instance["modality"], instance["rows"], instance["columns"]) == ("CR", 1955, 1841)
    assert instance["photometric"] == "MONOCHROME1"
    assert len(body["job_ids"]) == 1
    prediction = wait_for(
        lambda: _done_prediction(app_client, headers, instance["id"]), timeout=120, what="the chest model's prediction"
    )
    card = json.loads((ZOO / "cxr-nih14" / "card.json").read_text())
    assert prediction["labels"] == card["labels"] and len(prediction["probabilities"]) == len(card["labels"])
    assert all(0 < p < 1 for p in prediction["probabilities"])
    assert prediction["label"] == card["labels"][int(np.argmax(prediction["probabilities"]))]
    with session_scope() as session:
        stored = session.scalar(select(Instance).where(Instance.id == instance["id"]))
        assert stored.transfer_syntax_uid == "1.2.840.10008.1.2.4.91"  # JPEG 2000
