"""What the live pages are told of a study's AI while its jobs run, under the rules of the pages that listen.

A worker commits a job's output in steps (the prediction first, then heatmaps family by family, their
faithfulness scores last) or all at once; either way only rows change. Every second a stream asks `look`: a
digest of those rows, cheap to compute, and the state and results again only where the digest moved. The
caller is checked on every look as the page was: still signed in, and not blinded by a reader-study read of
this study (app/visibility.py): from the moment such a read is pending, no more AI goes out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from app import visibility
from app.errors import AppError
from app.live.schemas import LiveInstance, LiveJob, LiveSnapshot, LiveState
from app.reading import room
from app.studies.service import StudyNotFound
from app.tables import AuthSession, Heatmap, Instance, Job, JobState, Prediction, Series, Study, User
from app.viewer import service as viewer_service

_FINISHED = (JobState.done, JobState.failed)


class SignedOut(AppError):
    """401: the session or token that opened the stream has expired or been revoked since."""

    status_code = 401


@dataclass(frozen=True)
class Digest:
    """Hashes of what a page shows of the study's AI: `results` of its predictions and heatmaps (scored or not)
    and of which jobs finished; `state` of that and of the jobs' progress. The event id is both. `active`: some
    job of the study is queued or running, so more may come."""

    state: str
    results: str
    active: bool = False

    @property
    def event_id(self) -> str:
        return f"{self.state}.{self.results}"

    @classmethod
    def parse(cls, event_id: str | None) -> Digest | None:
        """The digest a reconnecting client last saw (its Last-Event-ID), or None if it sent none that fits."""
        state, dot, results = (event_id or "").partition(".")
        return cls(state=state, results=results) if dot and state and results else None


@dataclass(frozen=True)
class Look:
    """One look at the study: its digest, and the state and results where they changed since the last one."""

    digest: Digest
    state: LiveState | None
    instances: list[LiveInstance] | None


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def digest(session: Session, *, study_id: int) -> Digest:
    """The study's digest from three narrow queries (no heatmap bytes, no model cards)."""
    jobs = session.execute(
        select(Job.id, Job.state, Job.progress, Job.error).where(Job.study_id == study_id).order_by(Job.id)
    ).all()
    maps = session.execute(
        select(Prediction.id, Prediction.instance_id, Heatmap.id, Heatmap.method, Heatmap.target_class, Heatmap.scores)
        .join(Job, Prediction.job_id == Job.id)
        .outerjoin(Heatmap, Heatmap.prediction_id == Prediction.id)
        .where(Job.study_id == study_id)
        .order_by(Prediction.id, Heatmap.id)
    ).all()
    # Which jobs finished matters to the results: a finished job refused by its model's domain gate is shown.
    results = _hash([[[job.id, job.state in _FINISHED] for job in jobs], [list(row) for row in maps]])
    state = _hash([[[job.id, str(job.state), job.progress, job.error] for job in jobs], results])
    active = any(job.state not in _FINISHED for job in jobs)
    return Digest(state=state, results=results, active=active)


def check_open(session: Session, *, study_id: int, user_id: int) -> None:
    """StudyNotFound, or Blinded while this user has reader-study reads of the study pending: the same rule as
    the study page and the reading room, which open the stream."""
    if session.get(Study, study_id) is None:
        raise StudyNotFound(study_id)
    visibility.check_study_page(session, user_id=user_id, study_id=study_id)


def signed_in_user(session: Session, *, auth_session_id: int) -> User:
    """The user of this session or token while it is live and the user active, else SignedOut."""
    row = session.scalar(
        select(AuthSession).options(joinedload(AuthSession.user)).where(AuthSession.id == auth_session_id)
    )
    if row is None or row.revoked_at is not None or _aware(row.expires_at) <= datetime.now(UTC):
        raise SignedOut("your session has ended; sign in again")
    if not row.user.is_active:
        raise SignedOut("your account has been deactivated")
    return row.user


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def state_of(session: Session, *, study_id: int, user: User) -> LiveState:
    """The study's AI state as this user's worklist row shows it, with its jobs."""
    row = viewer_service.worklist_row_for(session, study_id=study_id, user=user)
    jobs = session.execute(select(Job.id, Job.state, Job.progress).where(Job.study_id == study_id).order_by(Job.id))
    return LiveState(
        ai_state=row.ai_state,
        ai_progress=row.ai_progress,
        ai_error=row.ai_error,
        ai_label=row.ai_label,
        ai_referral=row.ai_referral,
        jobs=[LiveJob(id=job.id, state=str(job.state), progress=job.progress) for job in jobs],
    )


def instances_of(session: Session, *, study_id: int, reader_id: int) -> list[LiveInstance]:
    """Each image of the study, in the reading room's order, with the model's output as its panel shows it."""
    ids = list(
        session.scalars(
            select(Instance.id)
            .join(Series, Instance.series_id == Series.id)
            .where(Series.study_id == study_id)
            .order_by(Series.number.nulls_last(), Series.id, Instance.number.nulls_last(), Instance.id)
        )
    )
    assistance, refusals = room.instance_assistance(session, instance_ids=ids, reader_id=reader_id)
    return [LiveInstance(id=image, assistance=assistance.get(image), refusal=refusals.get(image)) for image in ids]


def look(session: Session, *, study_id: int, auth_session_id: int, known: Digest | None) -> Look:
    """One look of a stream: SignedOut, StudyNotFound or Blinded as the page would be refused; else the digest,
    and the state and results that changed since `known` (all of it when None)."""
    user = signed_in_user(session, auth_session_id=auth_session_id)
    check_open(session, study_id=study_id, user_id=user.id)
    # The digest first: under read committed, what is read after it is at least as new, so a change is never
    # missed (at worst it is sent twice).
    now = digest(session, study_id=study_id)
    state = state_of(session, study_id=study_id, user=user) if known is None or known.state != now.state else None
    changed = known is None or known.results != now.results
    instances = instances_of(session, study_id=study_id, reader_id=user.id) if changed else None
    return Look(digest=now, state=state, instances=instances)


def snapshot(session: Session, *, study_id: int, user: User) -> LiveSnapshot:
    """The study's AI state and results at once, for a page that polls (refused as the page would be)."""
    check_open(session, study_id=study_id, user_id=user.id)
    return LiveSnapshot(
        digest=digest(session, study_id=study_id).event_id,
        state=state_of(session, study_id=study_id, user=user),
        instances=instances_of(session, study_id=study_id, reader_id=user.id),
    )
