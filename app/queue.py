"""The only place the app talks to Celery: send a task by name with a job id, after commit; see which jobs the
broker still holds a message for (the sweeper re-sends only the others); ping a worker.

The app never imports the workers: it sends `lumen.run_job` by name through a Celery client of its own, built
by `create_celery` from the settings, the function that also builds the worker's app (workers/celery_app.py).
Nothing here connects or creates a folder at import; the embedded broker's folders are made by the first
sender or worker (`prepare_broker`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from celery import Celery
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.config import Settings, get_settings

logger = logging.getLogger(__name__)

RUN_JOB_TASK = "lumen.run_job"
# A user's model on its way in (workers/onboarding.py): inspected, then checked, on the gpu queue like jobs.
ONBOARD_MODEL_TASK = "lumen.onboard_model"
# A finished job's results sent to the PACS as DICOM (app/dicom_results/push.py), by prediction id: network work,
# on the cpu queue.
PUSH_RESULTS_TASK = "lumen.push_results"
PUSH_RESULTS_QUEUE = "cpu"
QUEUES = ("gpu", "cpu")
_PENDING_KEY = "lumen_jobs_to_send"
_BROKER_FOLDERS = ("queue", "processed", "control")
# Kombu's Redis transport gives a message that a worker took and never acknowledged (the worker died) back to
# its queue after this long (its visibility_timeout, 1 hour). A broker that cannot be inspected is trusted to
# have lost a job's message only after it.
UNSEEN_RESEND_SECONDS = 3600
FILESYSTEM_POLLING_SECONDS = 0.05


class BrokerNotInspectable(RuntimeError):
    """The broker's messages cannot be listed (an unknown transport, or it did not answer)."""


def celery_config(settings: Settings) -> dict[str, object]:
    """Broker settings: Redis when BROKER_URL says so, else kombu's filesystem transport (no server)."""
    config: dict[str, object] = {
        "broker_url": settings.celery_broker_url,
        # Postgres is the job store; the result backend is not used.
        "task_ignore_result": True,
        "result_backend": None,
        # A task is acknowledged only when done, and re-queued if its worker dies mid-way.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cpu",
        "task_create_missing_queues": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "task_time_limit": 30 * 60,
        "task_soft_time_limit": 25 * 60,
    }
    if settings.broker_url is not None and settings.broker_namespace:
        config["broker_transport_options"] = {"global_keyprefix": settings.broker_namespace}
    if settings.broker_url is None:
        folder = settings.broker_folder
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "control_folder": str(folder / "control"),
            # How often an idle worker lists the queue folder: Celery's default (1 s) made a job wait 0.68 s
            # on average before pick-up; a listing of a near-empty folder costs microseconds.
            "polling_interval": FILESYSTEM_POLLING_SECONDS,
        }
        # The filesystem transport has no fanout exchange for remote control, gossip or mingle.
        config["worker_enable_remote_control"] = False
        config["worker_send_task_events"] = False
    return config


def create_celery(settings: Settings, *, include: Sequence[str] = ()) -> Celery:
    """A Celery app on the configured broker; `include` names the task modules a worker imports at start.
    Builds an object only: it connects when it first sends or consumes."""
    app = Celery("lumen", include=list(include))
    app.conf.update(celery_config(settings))
    return app


def prepare_broker(settings: Settings) -> None:
    """The embedded filesystem broker's folders, created by a sender or a worker as it starts; Redis needs none."""
    if settings.broker_url is None:
        for sub in _BROKER_FOLDERS:
            (settings.broker_folder / sub).mkdir(parents=True, exist_ok=True)


def sender() -> Celery:
    """The app's Celery client: it sends tasks by name, lists and pings; it runs no task. One per broker."""
    settings = get_settings()
    return _sender(settings.celery_broker_url, settings.broker_namespace, settings.broker_folder)


@lru_cache(maxsize=4)
def _sender(_url: str, _namespace: str, _folder: Path) -> Celery:
    # Keyed by what the broker depends on, so that tests that change the settings get a client of their own.
    settings = get_settings()
    prepare_broker(settings)
    return create_celery(settings)


def send_job(job_id: int, queue: str) -> None:
    """Send the job's task now. Only call with a job row that is already committed."""
    sender().send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
    logger.info("sent job %s to queue %s", job_id, queue)


def send_after_commit(session: Session, job_id: int, queue: str, *, task: str = RUN_JOB_TASK) -> None:
    """Send the job's task (or another task of one row id) once the session's transaction commits; nothing is
    sent on rollback."""
    pending: list[tuple[str, int, str]] = session.info.setdefault(_PENDING_KEY, [])
    if not pending:
        event.listen(session, "after_commit", _send_pending, once=True)
        event.listen(session, "after_soft_rollback", _forget_pending, once=True)
    pending.append((task, job_id, queue))


def _send_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, [])
    for task, row_id, queue in pending:
        try:
            if task == RUN_JOB_TASK:
                send_job(row_id, queue)
            else:
                sender().send_task(task, args=[row_id], queue=queue)
                logger.info("sent %s %s to queue %s", task, row_id, queue)
        except Exception:
            # The row is committed and stays queued: the sweeper re-sends a job when the broker is back; an
            # onboarding is sent again from its page.
            logger.exception("could not send %s %s", task, row_id)


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

    client = sender()
    node = host_format(default_nodename(name or ""))
    with client.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0, timeout=timeout)
        replies = client.control.ping(destination=[node], timeout=timeout, connection=connection)
    return node, any(node in reply for reply in replies)


def jobs_in_broker(queues: Collection[str], *, taken_grace_seconds: float) -> set[int]:
    """The ids of the jobs the broker holds a `run_job` message for: waiting in one of `queues`, or taken by a
    worker less than `taken_grace_seconds` ago or with a countdown (a task retry) that ended less than that ago.

    A message taken longer ago by a worker that has not started its job yet is not counted: that worker died
    between taking it and claiming the job, and Redis would give it back only after an hour. Raises
    BrokerNotInspectable when the broker cannot be listed; the caller falls back on sent_at alone.
    """
    settings = get_settings()
    if settings.broker_url is None:
        return _jobs_in_folder(settings.broker_folder / "queue", queues)
    scheme = settings.broker_url.partition("://")[0]
    if scheme in ("redis", "rediss"):
        return _jobs_in_redis(settings, queues, taken_grace_seconds)
    raise BrokerNotInspectable(f"Lumen cannot list the messages of the {scheme}:// broker")


def _jobs_in_redis(settings: Settings, queues: Collection[str], taken_grace_seconds: float) -> set[int]:
    """Kombu's Redis layout: a list per queue (and per priority step), and the `unacked` hash of the messages
    workers took, with the time each was taken in `unacked_index`. Every key carries the namespace prefix, which
    kombu adds itself only to some commands (not LRANGE or HGETALL): added here by hand to all."""
    import redis
    from kombu.transport.redis import Channel

    prefix = settings.broker_namespace
    keys = [
        prefix + (f"{queue}{Channel.sep}{step}" if step else queue)
        for queue in queues
        for step in Channel.priority_steps
    ]
    client = redis.Redis.from_url(str(settings.broker_url), socket_timeout=5, socket_connect_timeout=5)
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(key, 0, -1)
            waiting = pipe.execute()
        # Read after the lists: a message a worker moves meanwhile is then seen in one place or the other.
        taken = client.hgetall(prefix + Channel.unacked_key)
        # (member, score) pairs: redis-py annotates ZRANGE with the union of all its reply forms.
        scored = client.zrange(prefix + Channel.unacked_index_key, 0, -1, withscores=True)
        taken_at = dict(cast(list[tuple[bytes | str, float]], scored))
    except redis.RedisError as exc:
        raise BrokerNotInspectable(f"Redis did not answer: {exc}") from exc
    finally:
        client.close()
    held = {job for messages in waiting for raw in messages if (job := _job_of(raw)) is not None}
    recent = datetime.now(UTC).timestamp() - taken_grace_seconds
    for tag, entry in taken.items():
        try:
            raw = json.loads(entry)[0]
        except (ValueError, TypeError, IndexError):
            continue
        job, eta = _job_of(raw), _eta_of(raw)
        if job is not None and max(taken_at.get(tag, float("inf")), eta) > recent:
            held.add(job)
    return held


def _jobs_in_folder(folder: Path, queues: Collection[str]) -> set[int]:
    """Kombu's filesystem transport: a file per waiting message, `<time>_<uuid>.<queue>.msg`. A worker deletes
    the file when it takes the message, so what it holds (a countdown) is not seen here. No folder yet (nothing
    was ever sent, no worker ever started): no message."""
    wanted = {f"{queue}.msg" for queue in queues}
    if not folder.exists():
        return set()
    try:
        names = [name for name in os.listdir(folder) if name.partition(".")[2] in wanted]
    except OSError as exc:
        raise BrokerNotInspectable(f"cannot list the broker folder {folder}: {exc}") from exc
    held = set()
    for name in names:
        try:
            job = _job_of((folder / name).read_bytes())
        except OSError:  # taken by a worker meanwhile
            continue
        if job is not None:
            held.add(job)
    return held


def _message(raw: bytes | str | dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(raw, dict):
        return raw
    try:
        message = json.loads(raw)
    except ValueError:  # a file still being written, or not a kombu message
        return None
    return message if isinstance(message, dict) else None


def _job_of(raw: bytes | str | dict[str, Any]) -> int | None:
    """The job id of a Celery `run_job` message (protocol 2: body = [args, kwargs, embed]); None for others."""
    message = _message(raw)
    if message is None or (message.get("headers") or {}).get("task") != RUN_JOB_TASK:
        return None
    body = message.get("body", "")
    try:
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
    except (ValueError, TypeError, IndexError, KeyError, binascii.Error):
        return None
    return args[0] if isinstance(args, list) and args and isinstance(args[0], int) else None


def _eta_of(raw: bytes | str | dict[str, Any]) -> float:
    """When a countdown (a task retry) lets the message run, as a timestamp; 0 if it has none."""
    message = _message(raw) or {}
    eta = (message.get("headers") or {}).get("eta")
    try:
        moment = datetime.fromisoformat(eta) if isinstance(eta, str) else None
    except ValueError:
        return 0.0
    if moment is None:
        return 0.0
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
