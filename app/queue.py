"""The only place the app talks to Celery: send a task by name with a job id, after commit."""

from __future__ import annotations

import logging

from sqlalchemy import event
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

_PENDING_KEY = "lumen_jobs_to_send"


def send_job(job_id: int, queue: str) -> None:
    """Send the job's task now. Only call with a job row that is already committed."""
    # Imported here so that importing the app does not build the Celery app at import time.
    from workers.celery_app import RUN_JOB_TASK, celery_app

    celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
    logger.info("sent job %s to queue %s", job_id, queue)


def send_after_commit(session: Session, job_id: int, queue: str) -> None:
    """Send the job's task once the session's transaction commits; nothing is sent on rollback."""
    pending: list[tuple[int, str]] = session.info.setdefault(_PENDING_KEY, [])
    if not pending:
        event.listen(session, "after_commit", _send_pending, once=True)
        event.listen(session, "after_soft_rollback", _forget_pending, once=True)
    pending.append((job_id, queue))


def _send_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, [])
    for job_id, queue in pending:
        try:
            send_job(job_id, queue)
        except Exception:
            # The job row is committed and stays `queued`: the sweeper re-sends it when the broker is back.
            logger.exception("could not send job %s; the sweeper will retry", job_id)


def _forget_pending(session: Session, _previous_transaction: object) -> None:
    session.info.pop(_PENDING_KEY, None)


