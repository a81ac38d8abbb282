"""Jobs: which model runs on which instance, the job's life cycle (claims fenced by attempt, a heartbeat for
liveness), and the sweeper's rules: take back silent jobs, re-send only what the broker lost."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Result, Text, cast, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, aliased

from app import queue
from app.ai_models import routing
from app.config import get_settings
from app.errors import Invalid, NotFound
from app.jobs import limits
from app.tables import AiModel, Instance, Job, JobPriority, JobState, Prediction, Role
from models.explain.names import METHOD_NAMES

logger = logging.getLogger(__name__)


def model_for_modality(session: Session, *, modality: str, body_part: str = "") -> AiModel | None:
    """The model served automatically on images of this modality and body part, or None (app/ai_models/routing.py)."""
    return routing.automatic_model(session, modality=modality, body_part=body_part)


def plan_jobs(
    session: Session, *, study_id: int, instances: list[Instance], priority: JobPriority = JobPriority.batch
) -> list[Job]:
    """One job per instance that a model served automatically applies to (by modality and body part), sent to
    the workers once the session commits, with this priority (an upload by a signed-in user: interactive).

    Instances no such model takes get no job: the study shows "no model for this modality".
    """
    jobs: list[Job] = []
    for instance in instances:
        model = model_for_modality(session, modality=instance.modality, body_part=instance.series.body_part)
        if model is not None:
            jobs.append(
                _new_job(
                    session, study_id=study_id, instance=instance, model=model,
                    methods=served_methods(model), priority=priority,
                )
            )
    return jobs


def served_methods(model: AiModel) -> list[str]:
    """The methods an upload's job computes for this model: the default list, less those the model's onboarding
    checks flagged (a map that failed the model-randomisation test is not offered unless asked for by name)."""
    defaults = get_settings().default_methods
    vetted = ((model.card.get("evaluation") or {}).get("explanations") or {}).get("default")
    if not isinstance(vetted, list):
        return list(defaults)
    kept = [method for method in defaults if method in vetted]
    return kept or [method for method in vetted if method in METHOD_NAMES]


def request_explanations(
    session: Session, *, instance_id: int, methods: list[str], user_id: int, role: Role, model_name: str | None = None
) -> Job:
    """A new job, asked for by this user, that predicts again and computes these methods' heatmaps for one
    instance, with the model named (served automatically or not) or the one routing picks. NotFound for an
    unknown instance, Invalid for an unknown method, an unknown model or one whose domain does not take the image,
    Forbidden for a reader asking for an expensive method, TooMany beyond the user's quota of expensive jobs."""
    unknown = sorted(set(methods) - set(METHOD_NAMES))
    if unknown or not methods:
        raise Invalid(f"unknown methods {unknown}; known: {', '.join(METHOD_NAMES)}")
    instance = session.get(Instance, instance_id)
    if instance is None:
        raise NotFound(f"instance {instance_id} does not exist")
    model = routing.model_for_request(session, instance=instance, model_name=model_name)
    limits.check(session, methods=methods, user_id=user_id, role=role)
    return _new_job(
        session, study_id=instance.series.study_id, instance=instance, model=model,
        methods=list(dict.fromkeys(methods)), requested_by_id=user_id, priority=JobPriority.interactive,
    )


def _new_job(
    session: Session, *, study_id: int, instance: Instance, model: AiModel, methods: list[str],
    priority: JobPriority, requested_by_id: int | None = None,
) -> Job:
    job = Job(
        priority=int(priority),
        study_id=study_id,
        instance_id=instance.id,
        model_id=model.id,
        methods=list(methods),
        queue=get_settings().inference_queue,
        sent_at=datetime.now(UTC),
        requested_by_id=requested_by_id,
    )
    session.add(job)
    session.flush()
    queue.send_after_commit(session, job.id, job.queue)
    return job


def get_job(session: Session, *, job_id: int) -> Job:
    """The job, or NotFound."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a running job: which attempt it claimed. Every write of a worker about its job goes
    through its claim, so that a worker that lost the job (it stopped beating, the sweeper gave the job to
    another attempt, then it came back) neither keeps the job alive nor stores results nor finishes it."""

    job_id: int
    attempt: int
    worker: str


def _held(claim: Claim) -> ColumnElement[bool]:
    return (
        (Job.id == claim.job_id)
        & (Job.state == JobState.running)
        & (Job.attempts == claim.attempt)
        & (Job.worker == claim.worker)
    )


def _silent_since(cutoff: datetime) -> ColumnElement[bool]:
    """A running job whose worker has not beaten since `cutoff` (no beat at all counts as silent)."""
    return (Job.state == JobState.running) & or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)


def _rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE matched. Session.execute returns a CursorResult for an UPDATE without RETURNING, though
    it is annotated as returning a Result (sqlalchemy/sqlalchemy#9185)."""
    assert isinstance(result, CursorResult)
    return result.rowcount


def claim(session: Session, *, job_id: int, worker: str) -> bool:
    """Mark the job running for this worker as its next attempt, atomically. False if it is finished, held by a
    worker that still beats, or silent on its last allowed attempt (the sweeper fails that one with the reason).

    A `running` job whose heartbeat is older than `stale_job_seconds` is claimable again: its worker died (or
    lost the database) and the task came back. Each claim counts one attempt.
    """
    settings = get_settings()
    now = datetime.now(UTC)
    abandoned = _silent_since(now - timedelta(seconds=settings.stale_job_seconds)) & (
        Job.attempts < settings.max_job_attempts
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, or_(Job.state == JobState.queued, abandoned))
        .values(
            state=JobState.running,
            attempts=Job.attempts + 1,
            worker=worker,
            progress=0,
            error="",
            started_at=now,
            heartbeat_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def co_claim(session: Session, *, job_id: int, worker: str, limit: int) -> list[int]:
    """Claim up to `limit` more jobs to run in one batch with `job_id`, which this worker has just claimed.

    Taken, most urgent then oldest first, none less urgent than the lead: `queued` jobs never tried (a job that
    failed before runs alone, so it cannot spoil a batch) of the same model, methods list and queue, with an
    instance. Only a job on its first attempt gathers others. Rows another worker is claiming meanwhile are
    skipped, not waited for (no deadlock between two workers gathering each other's jobs). Their own tasks
    arrive later and find them taken: skipped.
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
            Job.priority <= lead.priority,
            # The JSON lists as stored: the same list written by this app is the same text.
            cast(Job.methods, Text) == cast(lead.methods, Text),
        )
        .order_by(Job.priority, Job.created_at, Job.id)
        .limit(limit)
        .with_for_update(of=Job, skip_locked=True)
    ).all()
    return [candidate for candidate in candidates if claim(session, job_id=candidate, worker=worker)]


def claim_more_urgent(session: Session, *, than: int, worker: str) -> int | None:
    """Claim the most urgent queued job of the same queue that is more urgent than job `than` (a lower
    `priority`), oldest first; its id, or None when none waits.

    The broker delivers in the order jobs were sent; this makes a worker take a newcomer's upload before the
    demo's backlog (or between the stages of a demo job: workers/pipeline.py). The job's own message arrives
    later and finds it taken. Rows another worker is claiming are skipped, not waited for.
    """
    reference = session.execute(select(Job.priority, Job.queue).where(Job.id == than)).one_or_none()
    if reference is None:
        return None
    candidates = session.scalars(
        select(Job.id)
        .where(
            Job.state == JobState.queued,
            Job.queue == reference.queue,
            Job.priority < reference.priority,
            Job.instance_id.is_not(None),
        )
        .order_by(Job.priority, Job.created_at, Job.id)
        .limit(3)
        .with_for_update(skip_locked=True)
    ).all()
    return next((candidate for candidate in candidates if claim(session, job_id=candidate, worker=worker)), None)


def touch(session: Session, *, claims: list[Claim]) -> list[int]:
    """Beat: the worker of these claims is alive (busy, not dead). Returns the jobs it still holds; a claim
    lost to another attempt is not beaten for, so that a worker that came back cannot keep a dead one's job
    looking alive."""
    if not claims:
        return []
    result = session.execute(
        update(Job)
        .where(or_(*(_held(c) for c in claims)))
        .values(heartbeat_at=datetime.now(UTC))
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


def set_progress(session: Session, *, claim: Claim, progress: int) -> None:
    """Show how far the job is; also a heartbeat."""
    session.execute(
        update(Job)
        .where(_held(claim))
        .values(progress=max(0, min(100, progress)), heartbeat_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )


def advance(session: Session, *, claim: Claim, progress: int) -> bool:
    """Show how far the job is, if this claim still holds it; False if it lost it (the caller then stores
    nothing). Like `finish`, the row stays locked until the caller's transaction commits what it stores with it:
    a job's results appear stage by stage (workers/pipeline.py), each under the claim."""
    result = session.execute(
        update(Job)
        .where(_held(claim))
        .values(progress=max(0, min(100, progress)), heartbeat_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def finish(session: Session, *, claim: Claim, timings: dict[str, float]) -> bool:
    """Mark the job done if this claim still holds it; False if it lost it (the caller then stores nothing).

    The row stays locked until the caller's transaction commits the job's results with it, so the sweeper
    cannot give the job away in between.
    """
    result = session.execute(
        update(Job)
        .where(_held(claim))
        .values(state=JobState.done, progress=100, error="", timings=timings, finished_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    finished = _rowcount(result) == 1
    if finished and timings.get("out_of_domain") != 1.0:
        _push_results_after_commit(session, job_id=claim.job_id)
    return finished


def _push_results_after_commit(session: Session, *, job_id: int) -> None:
    """When a DICOM destination is configured and the job's image came in as DICOM, send its model's prediction of
    the image (new, or the one this job added maps to) to the PACS once the job's results commit
    (app/dicom_results/push.py). A job the input-domain gate refused has no prediction to send."""
    settings = get_settings()
    if settings.dicom_push_url is None and settings.dicom_push_ae is None:
        return
    prediction_id = session.scalar(
        select(Prediction.id)
        .join(Job, (Job.instance_id == Prediction.instance_id) & (Job.model_id == Prediction.model_id))
        .join(Instance, Instance.id == Prediction.instance_id)
        .where(Job.id == job_id, Instance.source_format == "dicom")
        .order_by(Prediction.id.desc())
        .limit(1)
    )
    if prediction_id is not None:
        queue.send_after_commit(session, prediction_id, queue.PUSH_RESULTS_QUEUE, task=queue.PUSH_RESULTS_TASK)


def mark_failed(session: Session, *, claim: Claim, error: str, retry: bool) -> bool:
    """Record the failure if this claim still holds the job; False if it lost it. With retry the job goes back
    to `queued` (the caller re-sends it, with a countdown)."""
    now = datetime.now(UTC)
    outcome = {"state": JobState.queued, "sent_at": now} if retry else {"state": JobState.failed, "finished_at": now}
    result = session.execute(
        update(Job)
        .where(_held(claim))
        .values(error=error[:4000], progress=0, **outcome)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


@dataclass(frozen=True)
class Sweep:
    """What one pass of the sweeper did, by job id."""

    resent: list[int]  # queued, and the broker had no message for them any more: sent again
    requeued: list[int]  # running, their worker stopped beating: back to queued (reason in `error`), sent again
    failed: list[int]  # the same on their last attempt: failed with the reason

    def __bool__(self) -> bool:
        return bool(self.resent or self.requeued or self.failed)


def resend_stale(session: Session) -> Sweep:
    """One pass of the sweeper: take back the jobs of workers that stopped beating, and re-send the queued jobs
    whose message the broker lost (never one that merely waits in the queue). Sent once the session commits."""
    settings = get_settings()
    now = datetime.now(UTC)
    requeued, failed = _take_back_silent(session, now=now)
    resent = _resend_lost(session, now=now, grace_seconds=settings.stale_job_seconds)
    sweep = Sweep(resent=resent, requeued=requeued, failed=failed)
    if sweep:
        logger.info(
            "sweeper: re-sent lost jobs %s; requeued silent jobs %s; failed silent jobs %s", resent, requeued, failed
        )
    return sweep


def _take_back_silent(session: Session, *, now: datetime) -> tuple[list[int], list[int]]:
    """Running jobs whose heartbeat is older than `stale_job_seconds`: queued and re-sent for another attempt,
    or failed when that was the last one. Each row is changed only if it is still the silent attempt seen (its
    worker may beat again meanwhile, or finish: then it keeps the job)."""
    settings = get_settings()
    silent_since = now - timedelta(seconds=settings.stale_job_seconds)
    silent = session.execute(
        select(Job.id, Job.attempts, Job.worker, Job.heartbeat_at, Job.queue)
        .where(_silent_since(silent_since))
        .order_by(Job.id)
        .limit(500)
    ).all()
    requeued: list[int] = []
    failed: list[int] = []
    for row in silent:
        last_beat = (
            f"last heartbeat {_utc(row.heartbeat_at):%Y-%m-%d %H:%M:%S} UTC" if row.heartbeat_at else "no heartbeat"
        )
        what = f"worker {row.worker or '?'} stopped answering during attempt {row.attempts} ({last_beat})"
        give_up = row.attempts >= settings.max_job_attempts
        values: dict[str, Any] = (
            {
                "state": JobState.failed,
                "finished_at": now,
                "error": f"failed after {row.attempts} attempts (LUMEN_MAX_JOB_ATTEMPTS={settings.max_job_attempts}): "
                f"{what}",
            }
            if give_up
            else {"state": JobState.queued, "sent_at": now, "error": f"{what}; tried again"}
        )
        same_attempt = (Job.id == row.id) & (Job.attempts == row.attempts) & (Job.worker == row.worker)
        changed = _rowcount(session.execute(
            update(Job)
            .where(same_attempt, _silent_since(silent_since))
            .values(progress=0, **values)
            .execution_options(synchronize_session=False)
        ))
        if changed and give_up:
            failed.append(row.id)
        elif changed:
            requeued.append(row.id)
            queue.send_after_commit(session, row.id, row.queue)
    return requeued, failed


def _resend_lost(session: Session, *, now: datetime, grace_seconds: int) -> list[int]:
    """Queued jobs sent over `grace_seconds` ago of which the broker holds no message: sent again.

    One look at the broker per pass (app.queue.jobs_in_broker), and only when some job is that old. When the
    broker cannot be looked at, only jobs sent over UNSEEN_RESEND_SECONDS ago are sent again: a job that
    waits behind a long backlog must not be sent twice every pass.
    """
    unsent = (Job.state == JobState.queued) & or_(
        Job.sent_at.is_(None), Job.sent_at < now - timedelta(seconds=grace_seconds)
    )
    waiting = session.execute(select(Job.id, Job.queue, Job.sent_at).where(unsent).order_by(Job.id).limit(10_000)).all()
    if not waiting:
        return []
    try:
        held = queue.jobs_in_broker({row.queue for row in waiting}, taken_grace_seconds=grace_seconds)
        lost = [row for row in waiting if row.id not in held]
    except queue.BrokerNotInspectable as exc:
        unseen_before = now - timedelta(seconds=queue.UNSEEN_RESEND_SECONDS)
        lost = [row for row in waiting if row.sent_at is None or _utc(row.sent_at) < unseen_before]
        logger.warning(
            "sweeper: %s; re-sending only the %s of %s waiting jobs sent over %s s ago",
            exc,
            len(lost),
            len(waiting),
            queue.UNSEEN_RESEND_SECONDS,
        )
    resent = []
    for row in lost:
        # Still queued and not sent meanwhile (a worker's retry sends it again with a countdown).
        updated = _rowcount(session.execute(
            update(Job).where(Job.id == row.id, unsent).values(sent_at=now).execution_options(synchronize_session=False)
        ))
        if updated:
            queue.send_after_commit(session, row.id, row.queue)
            resent.append(row.id)
    return resent


def _utc(moment: datetime) -> datetime:
    # SQLite gives back naive datetimes; Lumen writes UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
