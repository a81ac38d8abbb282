"""Jobs: which model runs on which instance, the job's life cycle, and re-sending lost jobs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Text, cast, or_, select, update
from sqlalchemy.orm import Session, aliased

from app import queue
from app.config import get_settings
from app.tables import AiModel, Instance, Job, JobState
from models.explain.names import METHOD_NAMES

logger = logging.getLogger(__name__)


class JobNotFound(LookupError):
    pass


class JobRequestError(ValueError):
    """A job request that cannot be planned (unknown method, no model for the image); safe to show."""


def model_for_modality(session: Session, *, modality: str) -> AiModel | None:
    """The newest active model that its card lets run on this modality, or None."""
    models = session.scalars(
        select(AiModel).where(AiModel.is_active.is_(True)).order_by(AiModel.created_at.desc(), AiModel.id.desc())
    ).all()
    return next((m for m in models if modality in m.modalities and m.card.get("serve_automatically", True)), None)


def plan_jobs(session: Session, *, study_id: int, instances: list[Instance]) -> list[Job]:
    """One job per instance that a model applies to, sent to the workers once the session commits.

    Instances of a modality no model accepts get no job: the study shows "no model for this modality".
    """
    jobs: list[Job] = []
    for instance in instances:
        model = model_for_modality(session, modality=instance.modality)
        if model is not None:
            jobs.append(
                _new_job(
                    session, study_id=study_id, instance=instance, model=model, methods=get_settings().default_methods
                )
            )
    return jobs


def request_explanations(session: Session, *, instance_id: int, methods: list[str]) -> Job:
    """A new job that predicts again and computes these methods' heatmaps for one instance."""
    unknown = sorted(set(methods) - set(METHOD_NAMES))
    if unknown or not methods:
        raise JobRequestError(f"unknown methods {unknown}; known: {', '.join(METHOD_NAMES)}")
    instance = session.get(Instance, instance_id)
    if instance is None:
        raise JobNotFound(f"instance {instance_id} does not exist")
    model = model_for_modality(session, modality=instance.modality)
    if model is None:
        raise JobRequestError(f"no model for modality {instance.modality or 'unknown'}")
    return _new_job(
        session, study_id=instance.series.study_id, instance=instance, model=model, methods=list(dict.fromkeys(methods))
    )


def _new_job(session: Session, *, study_id: int, instance: Instance, model: AiModel, methods: list[str]) -> Job:
    job = Job(
        study_id=study_id,
        instance_id=instance.id,
        model_id=model.id,
        methods=list(methods),
        queue=get_settings().inference_queue,
        sent_at=datetime.now(UTC),
    )
    session.add(job)
    session.flush()
    queue.send_after_commit(session, job.id, job.queue)
    return job


def get_job(session: Session, *, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"job {job_id} does not exist")
    return job


def claim(session: Session, *, job_id: int, worker: str) -> bool:
    """Mark the job running for this worker, atomically. False if it is finished or held by another.

    A `running` job whose row has not moved for `stale_job_seconds` is claimable again: its worker died
    and the broker redelivered the task (acks_late).
    """
    settings = get_settings()
    stale_before = datetime.now(UTC) - timedelta(seconds=settings.stale_job_seconds)
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(Job.state == JobState.queued, (Job.state == JobState.running) & (Job.updated_at < stale_before)),
        )
        .values(
            state=JobState.running,
            attempts=Job.attempts + 1,
            worker=worker,
            progress=0,
            error="",
            started_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def co_claim(session: Session, *, job_id: int, worker: str, limit: int) -> list[int]:
    """Claim up to `limit` more jobs to run in one batch with `job_id`, which this worker has just claimed.

    Taken, oldest first: `queued` jobs never tried (a job that failed before runs alone, so it cannot spoil a
    batch) of the same model, methods list and queue, with an instance. Only a job on its first attempt
    gathers others. Rows another worker is claiming meanwhile are skipped, not waited for (no deadlock between
    two workers gathering each other's jobs). Their own tasks arrive later and find them taken: skipped.
    Returns the ids claimed.
    """
    if limit <= 0:
        return []
    lead = aliased(Job)
    candidates = session.scalars(
        select(Job.id)
        .join(lead, lead.id == job_id)
        .where(
            lead.attempts == 1,
            Job.id != job_id,
            Job.state == JobState.queued,
            Job.attempts == 0,
            Job.instance_id.is_not(None),
            Job.model_id == lead.model_id,
            Job.queue == lead.queue,
            # The JSON lists as stored: the same list written by this app is the same text.
            cast(Job.methods, Text) == cast(lead.methods, Text),
        )
        .order_by(Job.created_at, Job.id)
        .limit(limit)
        .with_for_update(of=Job, skip_locked=True)
    ).all()
    return [candidate for candidate in candidates if claim(session, job_id=candidate, worker=worker)]


def touch(session: Session, *, job_ids: list[int]) -> None:
    """Say these running jobs are alive (their worker is busy, not dead): `claim` takes a running job whose
    row has not moved for `stale_job_seconds` as abandoned."""
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.state == JobState.running)
        .values(updated_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )


def set_progress(session: Session, *, job_id: int, progress: int) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.running)
        .values(progress=max(0, min(100, progress)), updated_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )


def mark_done(session: Session, *, job: Job, timings: dict[str, float]) -> None:
    job.state = JobState.done
    job.progress = 100
    job.error = ""
    job.timings = timings
    job.finished_at = datetime.now(UTC)


def mark_failed(session: Session, *, job_id: int, error: str, retry: bool) -> Job:
    """Record the failure. With retry the job goes back to `queued` (the caller re-sends it)."""
    job = get_job(session, job_id=job_id)
    job.error = error[:4000]
    job.progress = 0
    if retry:
        job.state = JobState.queued
        job.sent_at = datetime.now(UTC)
    else:
        job.state = JobState.failed
        job.finished_at = datetime.now(UTC)
    return job


def resend_stale(session: Session, *, older_than_seconds: int | None = None) -> list[int]:
    """Re-send jobs left `queued` (e.g. the broker lost them) and jobs stuck `running` by a dead worker."""
    settings = get_settings()
    age = older_than_seconds if older_than_seconds is not None else settings.stale_job_seconds
    cutoff = datetime.now(UTC) - timedelta(seconds=age)
    stale = session.scalars(
        select(Job)
        .where(
            or_(
                (Job.state == JobState.queued) & (Job.sent_at < cutoff),
                (Job.state == JobState.running) & (Job.updated_at < cutoff),
            )
        )
        .order_by(Job.id)
        .limit(500)
    ).all()
    for job in stale:
        if job.state == JobState.running and job.attempts >= settings.max_job_attempts:
            job.state = JobState.failed
            job.error = f"the worker stopped answering after {job.attempts} attempts"
            job.finished_at = datetime.now(UTC)
            continue
        job.sent_at = datetime.now(UTC)
        queue.send_after_commit(session, job.id, job.queue)
    resent = [job.id for job in stale if job.state != JobState.failed]
    if resent:
        logger.info("sweeper re-sends jobs %s", resent)
    return resent


@dataclass(frozen=True)
class StudyAiSummary:
    state: str
    progress: int
    error: str


def summarise(jobs: list[Job]) -> StudyAiSummary:
    """One AI state for a study from its jobs: failed > running > queued > done; none means no model."""
    if not jobs:
        return StudyAiSummary("no_model", 0, "")
    states = {job.state for job in jobs}
    progress = round(sum(job.progress for job in jobs) / len(jobs))
    errors = "; ".join(job.error for job in jobs if job.state == JobState.failed and job.error)
    for state in (JobState.failed, JobState.running, JobState.queued):
        if state in states:
            return StudyAiSummary(state.value, progress, errors)
    return StudyAiSummary(JobState.done.value, 100, "")
