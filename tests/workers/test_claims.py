"""A worker writes about its job only while its claim holds: real DR model, real Postgres, real Redis.

The worker that lost its job (it went silent past LUMEN_STALE_JOB_SECONDS, the sweeper gave the job another
attempt) and then comes back must store nothing: one prediction and one set of heatmaps per job.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.jobs import service as jobs_service
from app.tables import AiModel, Heatmap, Job, JobState, Prediction
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, fresh_jpeg
from tests.workers.jobs import queued_photo_job
from workers import batch, pipeline

METHODS = ["gradcam", "saliency"]


def _queued_job() -> int:
    models_sync.sync_now()
    with session_scope() as session:
        model = jobs_service.model_for_modality(session, modality="OP")
        assert isinstance(model, AiModel)
        model_id = model.id
    return queued_photo_job(fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=256), model_id=model_id, methods=METHODS)


def _results(job_id: int) -> tuple[int, list[str]]:
    with session_scope() as session:
        predictions = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == job_id))
        methods = session.scalars(
            select(Heatmap.method).join(Prediction).where(Prediction.job_id == job_id).order_by(Heatmap.method)
        ).all()
    return predictions, list(methods)


def _silent(job_id: int) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))


def _row(job_id: int) -> tuple[JobState, int, str]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        return job.state, job.attempts, job.worker


def test_a_worker_that_lost_its_job_mid_compute_stores_nothing(monkeypatch) -> None:
    job_id = _queued_job()
    real_predict, swept = batch.predict, []

    def predict_while_the_job_is_taken_over(*args, **kwargs):  # type: ignore[no-untyped-def]
        # As if this worker had stalled (the database away) past the stale limit: the sweeper takes the job back
        # and another worker claims it, before this one comes back with its results.
        _silent(job_id)
        with session_scope() as session:
            swept.append(jobs_service.resend_stale(session))
        with session_scope() as session:
            assert jobs_service.claim(session, job_id=job_id, worker="celery@next")
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(batch, "predict", predict_while_the_job_is_taken_over)
    assert pipeline.run_job(job_id, worker="celery@stalled") == pipeline.Outcome.skipped
    assert job_id in swept[0].requeued
    assert _row(job_id) == (JobState.running, 2, "celery@next")  # not finished by the stalled worker
    assert _results(job_id) == (0, [])

    # celery@next dies in turn; the third attempt does the job, once.
    monkeypatch.setattr(batch, "predict", real_predict)
    _silent(job_id)
    with session_scope() as session:
        assert job_id in jobs_service.resend_stale(session).requeued
    assert pipeline.run_job(job_id, worker="celery@last") == pipeline.Outcome.done
    assert _row(job_id) == (JobState.done, 3, "celery@last")
    assert _results(job_id) == (1, sorted(METHODS))
    # The task of the first attempt, redelivered much later (Redis' visibility timeout), does nothing.
    assert pipeline.run_job(job_id, worker="celery@stalled") == pipeline.Outcome.skipped
    assert _row(job_id) == (JobState.done, 3, "celery@last")
    assert _results(job_id) == (1, sorted(METHODS))
