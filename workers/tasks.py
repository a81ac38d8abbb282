"""Thin Celery tasks with explicit names; they take ids, never objects."""

from __future__ import annotations

from workers import pipeline
from workers.celery_app import RUN_JOB_TASK, celery_app


@celery_app.task(name=RUN_JOB_TASK, bind=True, max_retries=None)
def run_job(self, job_id: int) -> str:  # type: ignore[no-untyped-def]
    """Run a job; on a retryable failure the job row is back in `queued` and the task is sent again."""
    outcome = pipeline.run_job(job_id, worker=self.request.hostname or "worker")
    if outcome == pipeline.Outcome.retry:
        # Bounded by the job's attempts (Settings.max_job_attempts), counted in its row, not here.
        raise self.retry(countdown=min(60, 5 * (self.request.retries + 1)))
    return outcome
