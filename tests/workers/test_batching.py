"""One task runs a batch of similar queued jobs: real DR model, real photographs, real Postgres.

Each job of a batch must get what it gets alone: its own prediction and maps (same values up to the rounding of
batched passes), its own failure, its own row.
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from sqlalchemy import select, update

from app.ai_models import sync as models_sync
from app.config import get_settings
from app.db import session_scope
from app.jobs import service as jobs_service
from app.tables import AiModel, Heatmap, Job, JobState, Prediction
from models import uncertainty
from models.card import ModelCard
from models.preprocessing import InputRegion, prepare, prepare_with_region
from tests.e2e.helpers import FUNDUS_IN_DOMAIN
from tests.workers.jobs import queued_photo_job
from workers import batch, model_cache, pipeline

METHODS = ["gradcam", "guided_backprop", "integrated_gradients"]
DR_MODEL = "dr-grading-retinamnist"


def _photo(variant: int) -> bytes:
    """A fundus photograph inside the DR model's domain, changed a little per variant (so the batch's rows
    differ), as a new JPEG."""
    image = Image.open(FUNDUS_IN_DOMAIN).convert("RGB")
    image.thumbnail((384, 384))
    if variant % 2:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(1.0 + 0.25 * (variant // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, comment=secrets.token_hex(8).encode())
    return buffer.getvalue()


def _queued_job(data: bytes, *, methods: list[str] = METHODS, model_name: str = DR_MODEL, attempts: int = 0) -> int:
    """A stored photograph and a queued job for it (not sent: the tests call the pipeline directly)."""
    with session_scope() as session:
        model_id = session.scalars(select(AiModel.id).where(AiModel.name == model_name)).one()
    return queued_photo_job(data, model_id=model_id, methods=methods, attempts=attempts)


@pytest.fixture(autouse=True)
def only_this_tests_jobs() -> Iterator[None]:
    """Jobs that earlier tests left queued would join these tests' batches: take them out of the queue."""
    models_sync.sync_now()
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.state == JobState.queued).values(state=JobState.failed, error="left by a test")
        )
    yield


@pytest.fixture(autouse=True)
def batch_size(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """LUMEN_WORKER_BATCH_SIZE 8 in these tests (unset, a CPU worker runs each job alone); a test may set another."""

    def set_size(size: int | None) -> None:
        monkeypatch.setattr(get_settings(), "worker_batch_size", size)

    set_size(8)
    return set_size


def _job(job_id: int) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def _results(job_id: int) -> tuple[Prediction, dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """The job's prediction, its maps as float32 arrays, and their scores, by method."""
    with session_scope() as session:
        prediction = session.scalars(select(Prediction).where(Prediction.job_id == job_id)).one()
        heatmaps = session.scalars(select(Heatmap).where(Heatmap.prediction_id == prediction.id)).all()
        maps = {h.method: np.frombuffer(h.data, np.float16).reshape(h.shape).astype(np.float32) for h in heatmaps}
        scores = {h.method: dict(h.scores) for h in heatmaps}
        session.expunge(prediction)
        return prediction, maps, scores


def test_one_task_finishes_similar_jobs_each_as_if_alone(batch_size) -> None:
    photos = [_photo(variant) for variant in range(3)]
    batched = [_queued_job(photo) for photo in photos]
    assert pipeline.run_job(batched[0], worker="batcher") == pipeline.Outcome.done
    jobs = [_job(job_id) for job_id in batched]
    assert [(j.state, j.attempts, j.worker) for j in jobs] == [(JobState.done, 1, "batcher")] * 3
    assert [j.timings["batch_size"] for j in jobs] == [3, 3, 3]
    assert len({j.timings["explain_s"] for j in jobs}) == 1  # the batch's, shared
    assert len({j.timings["decode_s"] for j in jobs}) == 3  # each job's own

    batch_size(1)
    alone = [_queued_job(photo) for photo in photos]
    for job_id in alone:
        assert pipeline.run_job(job_id, worker="alone") == pipeline.Outcome.done
        assert _job(job_id).timings["batch_size"] == 1
    probabilities = []
    for in_batch, by_itself in zip(batched, alone, strict=True):
        prediction, maps, scores = _results(in_batch)
        expected, expected_maps, expected_scores = _results(by_itself)
        np.testing.assert_allclose(prediction.probabilities, expected.probabilities, rtol=1e-4, atol=1e-7)
        assert prediction.predictive_entropy == pytest.approx(expected.predictive_entropy, rel=1e-4)
        assert prediction.mutual_information == pytest.approx(expected.mutual_information, rel=1e-3, abs=1e-8)
        assert prediction.label_index == expected.label_index
        assert sorted(maps) == sorted(METHODS)
        for method in METHODS:
            # Stored as float16: one unit of its last place (2^-11 relative) of the largest value is the bound.
            scale = np.abs(expected_maps[method]).max()
            np.testing.assert_allclose(maps[method], expected_maps[method], rtol=0, atol=scale * 2**-10)
            for key, value in expected_scores[method].items():
                assert scores[method][key] == pytest.approx(value, rel=1e-3, abs=1e-6), (method, key)
        probabilities.append(prediction.probabilities)
    assert probabilities[0] != probabilities[1]  # the rows were different images, not one repeated


def test_the_batch_computes_what_each_input_gets_alone_to_1e4() -> None:
    # The compute in float32, before the float16 storage: a sampled method (smoothgrad, image by image) too.
    methods = [*METHODS, "smoothgrad"]
    model, card = model_cache.get_model(DR_MODEL, _dr_version())
    inputs = [batch.Prepared(x, region, None) for x, region in (_prepared(variant, card) for variant in range(3))]
    together = batch.compute(model, card, inputs, methods)
    for item, result in zip(inputs, together, strict=True):
        [alone] = batch.compute(model, card, [item], methods)
        assert torch.allclose(result.estimate.probabilities, alone.estimate.probabilities, rtol=1e-4, atol=1e-7)
        # The single-image path before batching: estimate() of the one input.
        assert torch.allclose(alone.estimate.probabilities, uncertainty.estimate(model, item.x, card).probabilities)
        assert result.target == alone.target and result.timings["batch_size"] == 3
        for got, expected in zip(result.maps, alone.maps, strict=True):
            assert got.method == expected.method
            scale = float(np.abs(expected.array).max())
            np.testing.assert_allclose(got.array, expected.array, rtol=1e-4, atol=1e-4 * scale)
            assert got.scores == pytest.approx(expected.scores, rel=1e-4, abs=1e-6)


def _dr_version() -> str:
    with session_scope() as session:
        return session.scalars(select(AiModel.version).where(AiModel.name == DR_MODEL)).one()


def _prepared(variant: int, card: ModelCard) -> tuple[torch.Tensor, InputRegion]:
    image = np.asarray(Image.open(io.BytesIO(_photo(variant))).convert("RGB"))
    return prepare_with_region(image, card)


def test_only_queued_first_try_jobs_of_the_same_model_and_methods_join(batch_size) -> None:
    lead = _queued_job(_photo(0))
    other_model = _queued_job(_photo(1), model_name="cxr-demo")
    other_methods = _queued_job(_photo(1), methods=list(reversed(METHODS)))
    tried_before = _queued_job(_photo(1), attempts=1)
    joins = _queued_job(_photo(1))
    assert pipeline.run_job(lead, worker="batcher") == pipeline.Outcome.done
    assert _job(lead).timings["batch_size"] == 2
    assert (_job(joins).state, _job(joins).worker) == (JobState.done, "batcher")
    for left in (other_model, other_methods, tried_before):
        job = _job(left)
        assert (job.state, job.worker) == (JobState.queued, ""), left
    assert _job(tried_before).attempts == 1 and _job(other_model).attempts == 0


def test_a_retried_job_does_not_gather_others() -> None:
    retried = _queued_job(_photo(0), attempts=1)
    waiting = _queued_job(_photo(1))
    assert pipeline.run_job(retried, worker="batcher") == pipeline.Outcome.done
    assert _job(retried).timings["batch_size"] == 1
    assert _job(waiting).state == JobState.queued


def test_an_unreadable_image_fails_alone_and_the_others_are_done() -> None:
    good = _queued_job(_photo(0))
    damaged = _queued_job(b"\xff\xd8\xff\xe0 a damaged JPEG " + secrets.token_bytes(16))
    also_good = _queued_job(_photo(1))
    assert pipeline.run_job(good, worker="batcher") == pipeline.Outcome.done
    job = _job(damaged)
    assert (job.state, job.attempts) == (JobState.failed, 1)
    assert job.error.startswith("cannot read the image")
    assert [_job(i).state for i in (good, also_good)] == [JobState.done, JobState.done]
    assert _job(also_good).timings["batch_size"] == 2
    with session_scope() as session:
        assert session.query(Prediction).filter_by(job_id=damaged).count() == 0


def test_an_unreadable_lead_fails_and_still_runs_the_jobs_it_claimed() -> None:
    damaged = _queued_job(b"not a picture at all " + secrets.token_bytes(16))
    good = _queued_job(_photo(0))
    assert pipeline.run_job(damaged, worker="batcher") == pipeline.Outcome.failed
    assert _job(damaged).error.startswith("cannot read the image")
    assert _job(good).state == JobState.done


def test_a_co_claimed_jobs_own_task_later_finds_it_done() -> None:
    lead, other = _queued_job(_photo(0)), _queued_job(_photo(1))
    assert pipeline.run_job(lead, worker="batcher") == pipeline.Outcome.done
    assert pipeline.run_job(other, worker="its-own-task") == pipeline.Outcome.skipped
    job = _job(other)
    assert (job.state, job.worker, job.attempts) == (JobState.done, "batcher", 1)
    with session_scope() as session:
        assert session.query(Prediction).filter_by(job_id=other).count() == 1


def test_a_job_running_in_another_batch_is_skipped_by_its_own_task() -> None:
    lead, other = _queued_job(_photo(0)), _queued_job(_photo(1))
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=lead, worker="batcher")
        assert jobs_service.co_claim(session, job_id=lead, worker="batcher", limit=7) == [other]
    assert pipeline.run_job(other, worker="its-own-task") == pipeline.Outcome.skipped
    assert (_job(other).state, _job(other).worker) == (JobState.running, "batcher")


def test_when_the_batch_fails_each_job_runs_alone_and_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    real_predict = batch.predict
    alone_calls: list[int] = []

    def predict(model, card, inputs):  # type: ignore[no-untyped-def]
        if len(inputs) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        alone_calls.append(1)
        if len(alone_calls) == 2:
            raise RuntimeError("this image breaks the network (simulated)")
        return real_predict(model, card, inputs)

    monkeypatch.setattr(batch, "predict", predict)
    jobs = [_queued_job(_photo(variant)) for variant in range(3)]
    assert pipeline.run_job(jobs[0], worker="batcher") == pipeline.Outcome.done
    first, broken, third = (_job(job_id) for job_id in jobs)
    assert (first.state, third.state) == (JobState.done, JobState.done)
    assert first.timings["batch_size"] == third.timings["batch_size"] == 1
    # Not a permanent error: back to queued for another attempt, with the reason in its row.
    assert (broken.state, broken.attempts) == (JobState.queued, 1)
    assert broken.error == "RuntimeError: this image breaks the network (simulated)"


def test_batch_size_1_runs_each_job_alone_as_before(batch_size) -> None:
    batch_size(1)
    photo = _photo(0)
    first, second = _queued_job(photo), _queued_job(_photo(1))
    assert pipeline.run_job(first, worker="test") == pipeline.Outcome.done
    job = _job(first)
    assert job.timings["batch_size"] == 1
    assert {"decode_s", "load_model_s", "predict_s", "explain_s", "gradcam_s", "total_s"} <= set(job.timings)
    assert (_job(second).state, _job(second).attempts) == (JobState.queued, 0)
    # The estimate of the one input, as the pipeline computed it before batching.
    model, card = model_cache.get_model(DR_MODEL, _dr_version())
    x = prepare(np.asarray(Image.open(io.BytesIO(photo)).convert("RGB")), card)
    expected = uncertainty.estimate(model, x, card)
    prediction, maps, _ = _results(first)
    assert prediction.probabilities == [float(p) for p in expected.probabilities]
    assert prediction.predictive_entropy == expected.predictive_entropy
    assert sorted(maps) == sorted(METHODS)
    assert pipeline.run_job(second, worker="test") == pipeline.Outcome.done


def test_unset_batch_size_runs_each_job_alone_on_a_cpu_worker(batch_size) -> None:
    batch_size(None)
    assert model_cache.device().type == "cpu" and pipeline.batch_limit() == 1
    first, second = _queued_job(_photo(0)), _queued_job(_photo(1))
    assert pipeline.run_job(first, worker="cpu-worker") == pipeline.Outcome.done
    assert _job(second).state == JobState.queued  # left for its own task
    batch_size(3)
    assert pipeline.batch_limit() == 3


def test_a_long_compute_keeps_its_jobs_from_being_taken_for_abandoned(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stale limit shorter than the compute: without the heartbeat another worker could claim the jobs.
    monkeypatch.setattr(get_settings(), "stale_job_seconds", 2)
    first, second = _queued_job(_photo(0)), _queued_job(_photo(1))
    real_predict, seen = batch.predict, []

    def slow_predict(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(3.5)  # past the stale limit, beating every 0.5 s
        with session_scope() as session:
            seen.extend(jobs_service.claim(session, job_id=job_id, worker="thief") for job_id in (first, second))
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(batch, "predict", slow_predict)
    assert pipeline.run_job(first, worker="slow") == pipeline.Outcome.done
    assert seen == [False, False]
    assert {_job(job_id).worker for job_id in (first, second)} == {"slow"}
    assert {_job(job_id).state for job_id in (first, second)} == {JobState.done}
