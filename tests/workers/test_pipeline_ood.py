"""The input-domain gate in the worker's pipeline: real DR model and gate, real pixels, real Postgres.

An image outside the model's domain ends `done` with no prediction and no maps; the job's timings say so
(out_of_domain 1, the gate's score and threshold); an image inside it gets its prediction as before.
"""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select, update

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.tables import AiModel, Job, JobState, Prediction
from models.card import load_card
from models.datasets import load_medmnist
from tests.workers.jobs import queued_photo_job
from workers import pipeline

ROOT = Path(__file__).resolve().parents[2]
DR_MODEL = "dr-grading-retinamnist"


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95, comment=secrets.token_hex(8).encode())
    return buffer.getvalue()


def _radiograph() -> bytes:
    """A real NIH chest radiograph, as a JPEG photograph would arrive (so routing sends it to the fundus model)."""
    return _jpeg(Image.open(ROOT / "data" / "cxr" / "00000001_000.png"))


def _retinamnist_photo() -> bytes:
    """A RetinaMNIST test image (the DR model's own domain, never trained on), enlarged to 112 px."""
    pixels = load_medmnist(ROOT / "data" / "retinamnist.npz", num_classes=5)["test"].images[0]
    return _jpeg(Image.fromarray(pixels).resize((112, 112), Image.Resampling.BICUBIC))


def _queued(data: bytes) -> int:
    models_sync.sync_now()
    with session_scope() as session:
        model_id = session.scalars(select(AiModel.id).where(AiModel.name == DR_MODEL)).one()
    return queued_photo_job(data, model_id=model_id, methods=["gradcam"])


def _threshold() -> float:
    card = load_card(ROOT / "models" / "zoo" / DR_MODEL)
    assert card.ood is not None
    return card.ood.threshold


def test_a_radiograph_sent_to_the_fundus_model_gets_no_prediction_and_says_why() -> None:
    job_id = _queued(_radiograph())
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.progress, job.error) == (JobState.done, 100, "")
        assert job.timings["out_of_domain"] == 1.0
        assert job.timings["ood_threshold"] == _threshold() < job.timings["ood_score"]
        assert {"decode_s", "prepare_s", "ood_s", "total_s"} <= set(job.timings)
        assert "predict_s" not in job.timings  # the model's prediction never ran
        # No prediction, so no heatmap either (maps hang off a prediction).
        assert session.query(Prediction).filter_by(instance_id=job.instance_id).count() == 0


def test_a_fundus_image_of_the_models_own_domain_passes_the_gate() -> None:
    job_id = _queued(_retinamnist_photo())
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.timings["out_of_domain"] == 0.0 and job.timings["ood_score"] <= _threshold()
        [prediction] = session.query(Prediction).filter_by(job_id=job_id).all()
        assert len(prediction.probabilities) == 5 and [h.method for h in prediction.heatmaps] == ["gradcam"]


def test_in_one_batch_the_refused_image_does_not_stop_the_others(monkeypatch) -> None:
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "worker_batch_size", 4)
    with session_scope() as session:  # jobs that earlier tests left queued would join this batch
        session.execute(
            update(Job).where(Job.state == JobState.queued).values(state=JobState.failed, error="left by a test")
        )
    inside, outside = _queued(_retinamnist_photo()), _queued(_radiograph())
    outcome = pipeline.run_job(inside, worker="batch")
    assert outcome == pipeline.Outcome.done
    with session_scope() as session:
        jobs = {job_id: session.get(Job, job_id) for job_id in (inside, outside)}
        assert {job.state for job in jobs.values()} == {JobState.done}
        assert jobs[outside].worker == "batch"  # taken into the same batch, not left for its own task
        assert [job.timings["out_of_domain"] for job in jobs.values()] == [0.0, 1.0]
        assert session.query(Prediction).filter_by(job_id=inside).count() == 1
        assert session.query(Prediction).filter_by(job_id=outside).count() == 0
    assert np.isfinite(jobs[outside].timings["ood_score"])
