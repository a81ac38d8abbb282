"""What the worklist page is told while jobs run and studies arrive: its rows, under the rules of the page.

Each look of a worklist stream (app/live/streams.py) takes a digest of what the rows show: which studies are the
newest (new uploads), how many images each has, their jobs' state, progress and error, every queued or running
job (a queue place moves when a job ahead of it finishes, on the page or not), their predictions' labels and
referral flags, and the caller's reader-study blinding. The rows themselves are built again, as the page builds
them (app.viewer.service.worklist_for), only where the digest moved; the stream sends those that changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app import visibility
from app.live import service as live_service
from app.studies import service as studies_service
from app.tables import Job, JobState, Prediction, Study
from app.viewer import service as viewer_service
from app.viewer.schemas import WorklistRow

_UNFINISHED = (JobState.queued, JobState.running)


@dataclass(frozen=True)
class WorklistDigest:
    """A hash of what the caller's worklist rows show; `active`: some study of them is queued or running."""

    value: str
    active: bool


@dataclass(frozen=True)
class WorklistLook:
    """One look: the digest, and the rows (newest first) where it moved since the last one."""

    digest: WorklistDigest
    rows: list[WorklistRow] | None


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()[:16]


def worklist_digest(session: Session, *, user_id: int, limit: int = viewer_service.WORKLIST_LIMIT) -> WorklistDigest:
    """The digest of this user's worklist from narrow queries (no ORM rows, no model cards)."""
    ids = list(session.scalars(select(Study.id).order_by(Study.created_at.desc(), Study.id.desc()).limit(limit)))
    jobs = session.execute(
        select(Job.id, Job.study_id, Job.state, Job.progress, Job.error)
        .where(or_(Job.study_id.in_(ids), Job.state.in_(_UNFINISHED)))
        .order_by(Job.id)
    ).all()
    predictions = session.execute(
        select(Prediction.id, Prediction.label, Prediction.referral)
        .join(Job, Prediction.job_id == Job.id)
        .where(Job.study_id.in_(ids))
        .order_by(Prediction.id)
    ).all()
    counts = studies_service.instance_counts(session, study_ids=ids)
    blinded = sorted(visibility.blinded_studies(session, user_id=user_id, study_ids=ids))
    shown = set(ids)
    value = _hash([
        ids,
        sorted(counts.items()),
        [[job.id, job.study_id, str(job.state), job.progress, job.error] for job in jobs],
        [list(row) for row in predictions],
        blinded,
    ])
    active = any(job.state in _UNFINISHED and job.study_id in shown for job in jobs)
    return WorklistDigest(value=value, active=active)


def look(session: Session, *, auth_session_id: int, known: str | None) -> WorklistLook:
    """One look of a worklist stream: SignedOut once the caller's session ended; else the digest, and the rows
    where it differs from `known`."""
    user = live_service.signed_in_user(session, auth_session_id=auth_session_id)
    # The digest first: what is read after it is at least as new (read committed), so no change is missed.
    now = worklist_digest(session, user_id=user.id)
    rows = viewer_service.worklist_for(session, user=user).studies if now.value != known else None
    return WorklistLook(digest=now, rows=rows)


def changed_rows(rows: Sequence[dict], *, sent: dict[int, dict]) -> list[dict]:
    """The rows (as JSON) that differ from those `sent` by study id, new ones included, in the order given."""
    return [row for row in rows if sent.get(row["id"]) != row]
