"""Thin Celery tasks with explicit names; they take ids, never objects.

Declared with `shared_task`: importing this module needs no Celery app (the worker's app, workers/celery_app.py,
takes them up when it starts).
"""

from __future__ import annotations

from celery import Task, shared_task
from celery.signals import worker_process_init

from app.db import session_scope
from app.dicom_results import push
from app.queue import ONBOARD_MODEL_TASK, PUSH_RESULTS_TASK, RUN_JOB_TASK
from workers import onboarding, pipeline, warmup


@shared_task(name=RUN_JOB_TASK, bind=True, max_retries=None)
def run_job(self: Task, job_id: int) -> str:
    """Run a job; on a retryable failure the job row is back in `queued` and the task is sent again."""
    outcome = pipeline.run_job(job_id, worker=self.request.hostname or "worker")
    if outcome == pipeline.Outcome.retry:
        # Bounded by the job's attempts (Settings.max_job_attempts), counted in its row, not here.
        raise self.retry(countdown=min(60, 5 * (self.request.retries + 1)))
    return outcome


@shared_task(name=ONBOARD_MODEL_TASK, bind=True)
def onboard_model(self: Task, onboarding_id: int) -> str:
    """Inspect a model brought by a user, or check it once its target layer is confirmed (workers/onboarding.py);
    a failure is written into the onboarding's row, never raised."""
    return onboarding.run(onboarding_id, worker=self.request.hostname or "worker").value


@shared_task(name=PUSH_RESULTS_TASK)
def push_results(prediction_id: int) -> int:
    """Send a finished prediction's DICOM results to the configured PACS (app/dicom_results/push.py): retried there
    with backoff; a final failure, naming the destination, fails the task. Sending again stores the same objects."""
    with session_scope(writes=False) as session:
        return push.push_results(session, prediction_id)


@worker_process_init.connect
def _warm_up(**_: object) -> None:
    """Each process that runs jobs (the solo pool's one, or each prefork child) loads its served models first."""
    warmup.warm_served_models()
