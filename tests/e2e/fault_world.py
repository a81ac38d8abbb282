"""The world of the fault tests (tests/e2e/test_faults.py): a private Postgres and Redis (tests/servers.py),
`lumen serve --no-worker` running the sweeper, `lumen worker` processes to start, kill or freeze, and jobs
arranged in the private database with their messages sent to the private Redis."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from celery import Celery
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from app.ai_models.sync import sync_models
from app.config import Settings
from app.migrations import upgrade
from app.queue import RUN_JOB_TASK, create_celery
from app.tables import Heatmap, Job, JobState, Prediction
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, free_port, fresh_jpeg, wait_for
from tests.processes import LoggedProcess, start_lumen
from tests.servers import PrivatePostgres, PrivateRedis, start_postgres, start_redis
from tests.workers.jobs import add_photo_job

NAMESPACE = "lumen-faults:"
QUEUE = "gpu"
STALE_SECONDS = 3
SWEEP_SECONDS = 1
MAX_ATTEMPTS = 2
# A job long enough to be killed mid-way on this CPU (about 6 s), and a quick one.
SLOW = ("fundus-lesions-idrid", ["smoothgrad"], 512)
FAST = ("dr-grading-retinamnist", ["gradcam"], 256)


@dataclass
class World:
    postgres: PrivatePostgres
    redis: PrivateRedis
    env: dict[str, str]
    engine: Engine
    celery: Celery
    server: LoggedProcess
    base_url: str
    models: dict[str, int]

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def waiting_messages(self) -> list[int]:
        """The job ids of the messages waiting in the queue, oldest first."""
        return [job_of(raw) for raw in reversed(self.redis.client().lrange(NAMESPACE + QUEUE, 0, -1))]

    def sweeper_lines(self, what: str) -> list[list[int]]:
        """The job ids of each sweeper pass that logged `what` (e.g. "re-sent lost jobs") so far."""
        text = self.server.log_path.read_text(errors="replace")
        return [json.loads(ids) for ids in re.findall(rf"{what} (\[[0-9, ]*\])", text)]


def job_of(raw: bytes | str) -> int:
    message = json.loads(raw)
    [job_id] = json.loads(base64.b64decode(message["body"]))[0]
    return job_id


@contextmanager
def open_world() -> Iterator[World]:
    """Private Postgres and Redis, the schema and the shipped models, and `lumen serve --no-worker` (the sweeper)
    with the short limits above; all gone at the end."""
    postgres, redis_server = start_postgres(), start_redis()
    server: LoggedProcess | None = None
    engine: Engine | None = None
    try:
        url = postgres.create_database("lumen")
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "BROKER_URL": redis_server.url,
            "LUMEN_BROKER_NAMESPACE": NAMESPACE,
            "LUMEN_STALE_JOB_SECONDS": str(STALE_SECONDS),
            "LUMEN_SWEEP_INTERVAL_SECONDS": str(SWEEP_SECONDS),
            "LUMEN_MAX_JOB_ATTEMPTS": str(MAX_ATTEMPTS),
            "LUMEN_WORKER_BATCH_SIZE": "1",
        }
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True)
        with engine.begin() as connection:
            upgrade("head", connection=connection)
        with Session(engine) as session:
            models = {model.name: model.id for model in sync_models(session)}
            session.commit()
        celery = create_celery(Settings(BROKER_URL=redis_server.url, LUMEN_BROKER_NAMESPACE=NAMESPACE))
        port = free_port()
        server = start_lumen("faults-serve", "serve", "--no-worker", "--port", str(port), env=env)
        base_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base_url), timeout=60, what="lumen serve to answer")
        yield World(postgres, redis_server, env, engine, celery, server, base_url, models)
    finally:
        if server is not None:
            server.stop()
        if engine is not None:
            engine.dispose()
        redis_server.stop()
        postgres.remove()


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/login", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_worker(world: World, name: str) -> tuple[LoggedProcess, str]:
    """A `lumen worker` (prefork, one child) on the private servers, ready on the queue; (process, node)."""
    node = f"{name}-{os.getpid()}@faults"
    process = start_lumen(f"worker-{name}", "worker", "--queues", QUEUE, "--name", node, env=world.env)
    wait_for(
        lambda: f"{node} ready.".encode() in process.log_path.read_bytes(),
        timeout=90,
        what=f"worker {node} to be ready (log: {process.log_path})",
    )
    return process, node


def kill(worker: LoggedProcess) -> None:
    """SIGKILL the worker and its pool's process at once, as when its host or container dies."""
    signal_all(worker, signal.SIGKILL)
    worker.stop(sig=signal.SIGKILL)


def signal_all(worker: LoggedProcess, sig: int) -> None:
    """Send `sig` to the worker and to every process under it (its pool's)."""
    for pid in [*_descendants(worker.pid), worker.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (in parentheses) may hold spaces: the parent pid is the 2nd field after it.
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def queue_job(world: World, kind: tuple[str, list[str], int]) -> int:
    """A stored photograph and a committed job of this kind for it; its message sent to the private Redis."""
    model, methods, side = kind
    with world.session() as session:
        job = add_photo_job(session, fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=side), model_id=world.models[model],
                            methods=methods)
        session.commit()
    world.celery.send_task(RUN_JOB_TASK, args=[job.id], queue=QUEUE)
    return job.id


@dataclass(frozen=True)
class Outcome:
    state: JobState
    attempts: int
    worker: str
    error: str
    predictions: int
    heatmaps: list[str]
    finished_at: datetime | None


def outcome_of(world: World, job_id: int) -> Outcome:
    with world.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        predictions = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == job_id))
        heatmaps = session.scalars(
            select(Heatmap.method).join(Prediction).where(Prediction.job_id == job_id).order_by(Heatmap.method)
        ).all()
        return Outcome(job.state, job.attempts, job.worker, job.error, predictions or 0, list(heatmaps),
                       job.finished_at)


def state_of(world: World, job_id: int) -> tuple[JobState, int, int]:
    with world.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.state, job.attempts, job.progress


def computing(world: World, job_id: int, attempt: int, *, progress: int = 40) -> bool:
    """The job's `attempt` has stored its prediction (progress 40): its worker is computing the maps."""
    state, attempts, shown = state_of(world, job_id)
    return state == JobState.running and attempts == attempt and shown >= progress


def finished(world: World, job_ids: list[int]) -> list[Outcome] | None:
    outcomes = [outcome_of(world, job_id) for job_id in job_ids]
    return outcomes if all(o.state in (JobState.done, JobState.failed) for o in outcomes) else None

