"""What the jobs' own timings say (workers/stages.py writes them): per model, the medians of its last jobs and
where the time goes, stage by stage; for a queued job, its place in the queue and when it may start."""

from __future__ import annotations

import statistics
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.jobs.schemas import QueuePlace, StageShare, TimingSummary
from app.tables import Job, JobState

# The stages of a job's timings, in the order they run, with the name an admin reads.
STAGES = (
    ("decode_s", "decode the image"),
    ("prepare_s", "preprocess (crop, resize)"),
    ("ood_s", "input-domain gate"),
    ("predict_s", "prediction and uncertainty"),
    ("explain_s", "maps"),
    ("resample_s", "maps onto the image"),
    ("scores_s", "faithfulness scores"),
    ("store_s", "database writes"),
    ("overhead_s", "overhead: all but the network's work"),
)
RECENT_JOBS = 200
PACE_JOBS = 50


def model_timings(session: Session, *, model_id: int, last: int = RECENT_JOBS) -> TimingSummary | None:
    """Medians over the model's last `last` finished jobs that gave an answer (a prediction), and each stage's
    share of their time; None before any such job, or for jobs from before stage timings were kept."""
    rows = session.execute(
        select(Job.timings, Job.created_at, Job.started_at)
        .where(Job.model_id == model_id, Job.state == JobState.done)
        .order_by(Job.finished_at.desc())
        .limit(last)
    ).all()
    answered = [row for row in rows if "first_answer_s" in (row.timings or {})]
    if not answered:
        return None
    timings = [row.timings for row in answered]
    worked = sum(t["total_s"] - t.get("urgent_s", 0.0) for t in timings)
    waits = [_seconds(row.created_at, row.started_at) for row in answered if row.started_at is not None]
    return TimingSummary(
        jobs=len(answered),
        wait_s=statistics.median(waits) if waits else None,
        first_answer_s=_median(timings, "first_answer_s"),
        first_map_s=_median(timings, "first_map_s"),
        all_maps_s=_median(timings, "all_maps_s"),
        total_s=_median(timings, "total_s"),
        overhead_share=sum(t.get("overhead_s", 0.0) for t in timings) / worked if worked > 0 else None,
        stages=[
            StageShare(key=key, name=name, median_s=_median(timings, key),
                       share=sum(t.get(key, 0.0) for t in timings) / worked if worked > 0 else None)
            for key, name in STAGES
        ],
    )


def queue_place(session: Session, job: Job) -> QueuePlace:
    """A queued job's place: how many jobs of its queue a worker takes before it (more urgent ones, then older
    ones of its priority), and when it may start at the pace of the queue's last jobs; empty for other states."""
    if job.state != JobState.queued:
        return QueuePlace()
    ahead = session.scalar(
        select(func.count(Job.id)).where(
            Job.queue == job.queue,
            Job.id != job.id,
            or_(
                Job.state == JobState.running,
                and_(
                    Job.state == JobState.queued,
                    or_(Job.priority < job.priority,
                        and_(Job.priority == job.priority,
                             or_(Job.created_at < job.created_at,
                                 and_(Job.created_at == job.created_at, Job.id < job.id)))),
                ),
            ),
        )
    ) or 0
    return _place(ahead, _paces(session, queues=[job.queue])[job.queue])


def queue_places(session: Session, jobs: Sequence[Job]) -> dict[int, QueuePlace]:
    """queue_place of many jobs by job id, the queued ones only, in three queries whatever their number (the
    worklist asks it of the queued studies of its page every two seconds): each job's rank among the queued jobs
    of its queue, in the order a worker takes them, after the jobs its queue is running."""
    queued = [job for job in jobs if job.state == JobState.queued]
    if not queued:
        return {}
    queues = {job.queue for job in queued}
    order = func.row_number().over(partition_by=Job.queue, order_by=(Job.priority, Job.created_at, Job.id))
    ranked = select(Job.id, order.label("rank")).where(Job.state == JobState.queued, Job.queue.in_(queues)).subquery()
    wanted = select(ranked.c.id, ranked.c.rank).where(ranked.c.id.in_([job.id for job in queued]))
    ranks: dict[int, int] = {job_id: rank for job_id, rank in session.execute(wanted)}
    running: dict[str, int] = {
        queue: count
        for queue, count in session.execute(
            select(Job.queue, func.count(Job.id))
            .where(Job.state == JobState.running, Job.queue.in_(queues))
            .group_by(Job.queue)
        )
    }
    paces = _paces(session, queues=queues)
    return {
        job.id: _place(running.get(job.queue, 0) + ranks[job.id] - 1, paces.get(job.queue))
        for job in queued
        if job.id in ranks
    }


def _place(ahead: int, pace: float | None) -> QueuePlace:
    return QueuePlace(
        position=ahead + 1, jobs_ahead=ahead, expected_start_s=round(ahead * pace, 1) if pace is not None else None
    )


def _paces(session: Session, *, queues: Collection[str]) -> dict[str, float | None]:
    """The median work time of each queue's last PACE_JOBS finished jobs (None before any), in one query."""
    latest = func.row_number().over(partition_by=Job.queue, order_by=Job.finished_at.desc())
    recent = (
        select(Job.queue, Job.timings, latest.label("n"))
        .where(Job.queue.in_(queues), Job.state == JobState.done)
        .subquery()
    )
    totals: dict[str, list[float]] = {queue: [] for queue in queues}
    for queue, t in session.execute(select(recent.c.queue, recent.c.timings).where(recent.c.n <= PACE_JOBS)):
        if t and "total_s" in t:
            totals[queue].append(t["total_s"] - t.get("urgent_s", 0.0))
    return {queue: statistics.median(values) if values else None for queue, values in totals.items()}


def _median(timings: list[dict[str, float]], key: str) -> float | None:
    values = [t[key] for t in timings if key in t]
    return statistics.median(values) if values else None


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())
