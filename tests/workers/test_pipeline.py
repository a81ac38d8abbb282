"""The worker's pipeline without Celery: real model, real pixels, real Postgres."""

from __future__ import annotations

import io
import secrets

import numpy as np
import pytest
from PIL import Image

from app.db import session_scope
from app.jobs import service as jobs_service
from app.tables import Job, JobState, Prediction, Role
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, fresh_jpeg
from tests.workers.jobs import fundus_model_id, queued_photo_job
from workers import pipeline


def _job_for_blob(data: bytes, methods: list[str] | None = None) -> int:
    """A stored fundus photograph and a job for the DR model (not sent: the test runs it directly)."""
    model_id = fundus_model_id()
    return queued_photo_job(data, model_id=model_id, methods=methods or ["gradcam"])


def test_a_job_stores_probabilities_entropy_and_a_gradcam_map() -> None:
    photo = fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=512)
    width, height = Image.open(io.BytesIO(photo)).size
    job_id = _job_for_blob(photo)
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.progress, job.attempts) == (JobState.done, 100, 1)
        assert {"decode_s", "predict_s", "gradcam_s", "total_s"} <= set(job.timings)
        [prediction] = session.query(Prediction).filter_by(job_id=job_id).all()
        probabilities = np.array(prediction.probabilities)
        assert probabilities.sum() == pytest.approx(1, abs=1e-5)
        expected_entropy = -(probabilities * np.log(probabilities)).sum()
        assert prediction.predictive_entropy == pytest.approx(expected_entropy, rel=1e-5)
        [heatmap] = prediction.heatmaps
        assert heatmap.method == "gradcam" and heatmap.target_class == prediction.label_index
        # Stored in the photograph's frame (at most 512 px), not the 28 px network input.
        assert heatmap.shape == [height, width]
        assert heatmap.parameters["input_size"] == job.model.card["input"]["size"]


def test_a_finished_job_redelivered_does_nothing() -> None:
    job_id = _job_for_blob(fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=256))
    assert pipeline.run_job(job_id, worker="first") == pipeline.Outcome.done
    assert pipeline.run_job(job_id, worker="redelivered") == pipeline.Outcome.skipped
    with session_scope() as session:
        assert session.query(Prediction).filter_by(job_id=job_id).count() == 1
        assert session.get(Job, job_id).worker == "first"


def test_unreadable_pixels_fail_the_job_at_once_with_the_reason() -> None:
    job_id = _job_for_blob(b"\xff\xd8\xff\xe0 a damaged JPEG " + secrets.token_bytes(16))
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.failed
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.state == JobState.failed and job.attempts == 1
        assert job.error.startswith("cannot read the image")
        assert session.query(Prediction).filter_by(job_id=job_id).count() == 0


def test_asking_for_more_methods_adds_heatmaps_to_the_same_prediction(make_user) -> None:
    coordinator, _ = make_user("coordinator")
    job_id = _job_for_blob(fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=300), methods=["gradcam", "saliency"])
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    with session_scope() as session:
        instance_id = session.get(Job, job_id).instance_id
        more = jobs_service.request_explanations(
            session, instance_id=instance_id, methods=["saliency", "integrated_gradients"],
            user_id=coordinator.id, role=Role.coordinator,
        )
        more_id = more.id
    assert pipeline.run_job(more_id, worker="test") == pipeline.Outcome.done
    with session_scope() as session:
        [prediction] = session.query(Prediction).filter_by(instance_id=instance_id).all()
        methods = sorted(h.method for h in prediction.heatmaps)
        assert methods == ["gradcam", "integrated_gradients", "saliency"]  # saliency not stored twice
        ig = next(h for h in prediction.heatmaps if h.method == "integrated_gradients")
        # Completeness of IG: the stored convergence delta is small next to the logit difference.
        assert abs(ig.scores["convergence_delta"]) < 0.05
        assert {"deletion_auc", "insertion_auc"} <= set(ig.scores)


def test_unknown_methods_are_refused_with_the_list_of_known_ones(app_client, auth_headers) -> None:
    job_id = _job_for_blob(fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=200))
    with session_scope() as session:
        instance_id = session.get(Job, job_id).instance_id
    response = app_client.post(
        "/api/jobs", json={"instance_id": instance_id, "methods": ["gradcam", "magic"]}, headers=auth_headers("reader")
    )
    assert response.status_code == 422 and "magic" in response.json()["detail"]
    # Occlusion runs the network once per patch: a reader may not queue it (app/jobs/limits.py), a coordinator may.
    response = app_client.post(
        "/api/jobs", json={"instance_id": instance_id, "methods": ["occlusion"]}, headers=auth_headers("reader")
    )
    assert response.status_code == 403 and "occlusion" in response.json()["detail"]
    response = app_client.post(
        "/api/jobs", json={"instance_id": instance_id, "methods": ["occlusion"]}, headers=auth_headers("coordinator")
    )
    assert response.status_code == 201 and response.json()["methods"] == ["occlusion"]


def test_a_large_photograph_is_decoded_reduced_and_its_maps_lie_on_the_whole_image() -> None:
    from pathlib import Path

    from app.ingest import pixels
    from models import uncertainty
    from models.card import load_card
    from models.preprocessing import prepare_with_region
    from models.registry import load_model

    root = Path(__file__).resolve().parents[2]
    photo = (root / "data" / "idrid" / "IDRiD_01.jpg").read_bytes()  # 1024 x 855: decoded at 1/2 for 28 px
    card = load_card(root / "models" / "zoo" / "dr-grading-retinamnist")
    x, full_region = prepare_with_region(pixels.load_image(photo), card)
    expected = uncertainty.estimate(load_model(card), x, card).probabilities
    job_id = _job_for_blob(photo)
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    with session_scope() as session:
        [prediction] = session.query(Prediction).filter_by(job_id=job_id).all()
        [heatmap] = prediction.heatmaps
        assert heatmap.shape == [428, 512]  # the photograph's frame, not the reduced decode's
        top, left, height, width = heatmap.parameters["region"]
        wanted = (full_region.top, full_region.left, full_region.height, full_region.width)
        assert max(abs(a - b) for a, b in zip((top, left, height, width), wanted, strict=True)) <= 2
        np.testing.assert_allclose(prediction.probabilities, expected.tolist(), atol=0.02)
