"""The multi-host shape on one machine: two `lumen worker` processes, each with a data folder of its own (no
shared disk between the "hosts"), on one Postgres and one Redis, with the blobs in an S3 bucket on a real
server (`rclone serve s3`). Uploads through the API; every job is done once, by one of the two workers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.storage import get_blob_store
from app.tables import Job, JobState, Prediction
from tests.conftest import broker_redis, queue_key
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, fresh_jpeg, wait_for
from tests.processes import LoggedProcess, start_lumen
from tests.s3 import S3Server, new_bucket_name
from tests.settings import settings_env

pytestmark = pytest.mark.slow

PHOTOGRAPHS = 6
FUNDUS = [FUNDUS_IN_DOMAIN, Path(__file__).resolve().parents[1] / "fixtures" / "images" / "IDRiD_03_small.jpg"]


@dataclass
class Host:
    node: str  # the worker's Celery node name, which each job's row keeps as its `worker`
    data_dir: Path
    process: LoggedProcess


@pytest.fixture(scope="module")
def s3_env(s3_server: S3Server) -> dict[str, str]:
    """The S3 settings every host shares: a fresh bucket, made ready as `lumen migrate` does."""
    env = s3_server.env(bucket=new_bucket_name(), prefix="multi-host")
    with settings_env(env):
        get_blob_store().prepare()
    return env


@pytest.fixture(scope="module")
def hosts(s3_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Host]]:
    """Two workers on the session's database, broker and namespace (os.environ) and the shared bucket.

    Each runs one job at a time (concurrency 1, prefetch 1, batches of 1: no co-claiming of queued jobs).
    Both are ready, waiting on the queue, before the test uploads; its one upload sends all the jobs at once,
    so each worker takes one at once and then the next when done: both work, whatever the machine's speed.
    Earlier tests' queued messages are dropped first, so the workers start on this module's jobs.
    """
    models_sync.sync_now()
    broker_redis().delete(queue_key("gpu"), queue_key("cpu"))
    started: list[Host] = []
    for name in ("host-a", "host-b"):
        node = f"{name}-{os.getpid()}@lumen-test"
        data_dir = tmp_path_factory.mktemp(name)
        env = {**os.environ, **s3_env, "LUMEN_DATA_DIR": str(data_dir), "LUMEN_WORKER_BATCH_SIZE": "1"}
        process = start_lumen(
            f"worker-{name}", "worker", "--queues", "gpu,cpu", "--concurrency", "1", "--name", node, env=env
        )
        started.append(Host(node, data_dir, process))
    try:
        for host in started:
            wait_for(
                lambda host=host: f"{host.node} ready.".encode() in host.process.log_path.read_bytes(),
                timeout=60,
                what=f"worker {host.node} to be ready (log: {host.process.log_path})",
            )
        yield started
    finally:
        codes = [host.process.stop() for host in started]
    assert codes == [0, 0], f"a worker did not stop cleanly; see {[h.process.log_path for h in started]}"


def _jobs(job_ids: list[int]) -> list[Job]:
    with session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.id.in_(job_ids))))
        session.expunge_all()
    return jobs


def _finished(job_ids: list[int]) -> list[Job] | None:
    jobs = _jobs(job_ids)
    return jobs if all(job.state in (JobState.done, JobState.failed) for job in jobs) else None


def test_two_workers_without_shared_disk_share_the_jobs(
    hosts: list[Host], s3_env: dict[str, str], s3_server: S3Server, app_client, auth_headers, test_output
) -> None:
    headers = auth_headers("admin")
    files = [
        ("files", (f"fundus-{n}.jpg", fresh_jpeg(FUNDUS[n % 2], max_side=512), "image/jpeg"))
        for n in range(PHOTOGRAPHS)
    ]
    started = time.monotonic()
    # Only the quick map, so that the test is about the hosts and not about the explainers.
    with settings_env(s3_env | {"LUMEN_DEFAULT_METHODS": "gradcam"}):
        upload = app_client.post("/api/studies", files=files, headers=headers)
    assert upload.status_code == 201, upload.text
    job_ids = [job_id for study in upload.json()["studies"] for job_id in study["job_ids"]]
    assert len(job_ids) == PHOTOGRAPHS

    jobs = wait_for(lambda: _finished(job_ids), timeout=90, what=f"{PHOTOGRAPHS} jobs done by the two workers")
    seconds = time.monotonic() - started

    assert [(job.state, job.attempts, job.error) for job in jobs] == [(JobState.done, 1, "")] * PHOTOGRAPHS
    by_worker = {host.node: sorted(job.id for job in jobs if job.worker == host.node) for host in hosts}
    assert all(by_worker.values()) and sum(map(len, by_worker.values())) == PHOTOGRAPHS, by_worker
    with session_scope() as session:
        predictions = session.execute(
            select(Prediction.instance_id, func.count(), func.min(Prediction.job_id))
            .where(Prediction.job_id.in_(job_ids))
            .group_by(Prediction.instance_id)
        ).all()
    assert sorted((count, job_id) for _, count, job_id in predictions) == [(1, j) for j in sorted(job_ids)]
    for host in hosts:
        assert not (host.data_dir / "blobs").exists(), f"{host.node} wrote blobs to its own disk"
    objects = s3_server.object_names(s3_env["LUMEN_S3_BUCKET"])
    assert len(objects) == 2 * PHOTOGRAPHS and all(name.startswith("multi-host/") for name in objects)
    report = {"upload_to_all_done_s": round(seconds, 2), "jobs_by_worker": by_worker}
    (test_output / "multi_host.json").write_text(json.dumps(report, indent=2))
