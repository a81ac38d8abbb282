"""The only place the app talks to Celery: send a task by name with a job id, after commit."""

from __future__ import annotations

import logging
import os

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.config import Settings

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


def check_broker(settings: Settings, *, timeout: float) -> None:
    """Raise unless the broker answers within `timeout` s; the embedded broker: its folder is writable."""
    if settings.broker_url is None:
        folder = settings.broker_folder
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"broker folder {folder} is not writable")
        return
    from kombu import Connection

    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "max_retries": 0}
    with Connection(settings.broker_url, connect_timeout=timeout, transport_options=options) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=timeout)


def ping_worker(*, name: str | None = None, timeout: float = 5.0) -> tuple[str, bool]:
    """(node, answered): whether the worker named `name` (`lumen worker --name`; default celery@HOSTNAME, this
    host's) answers a ping within `timeout` s. Raises kombu's OperationalError if the broker is not reachable."""
    from celery.utils.nodenames import default_nodename, host_format

    from workers.celery_app import celery_app

    node = host_format(default_nodename(name or ""))
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=timeout)
        replies = celery_app.control.ping(destination=[node], timeout=timeout, connection=connection)
    return node, any(node in reply for reply in replies)
