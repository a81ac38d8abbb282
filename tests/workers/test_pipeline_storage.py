"""The pipeline and the blob store: a missing blob fails a job at once; a store that does not answer (S3 down)
is a failure worth another try, not the image's fault."""

from __future__ import annotations

from app.db import session_scope
from app.storage import get_blob_store
from app.tables import Instance, Job, JobState
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, free_port, fresh_jpeg
from tests.settings import settings_env
from tests.workers.jobs import fundus_model_id, queued_photo_job
from workers import pipeline


def _photo_job() -> tuple[int, str]:
    """A queued DR-model job for a stored photograph; (job id, the photograph's storage key)."""
    model_id = fundus_model_id()
    job_id = queued_photo_job(fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=128), model_id=model_id, methods=["gradcam"])
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and isinstance(job.instance, Instance)
        return job_id, job.instance.storage_key


def test_a_missing_blob_fails_the_job_at_once() -> None:
    job_id, key = _photo_job()
    get_blob_store().delete(key)
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.failed
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.attempts) == (JobState.failed, 1)
        assert job.error == f"cannot read the image: no blob under the key {key!r}"


def test_an_unreachable_store_sends_the_job_back_to_the_queue() -> None:
    job_id, _ = _photo_job()
    unreachable = {
        "LUMEN_S3_BUCKET": "lumen",
        "LUMEN_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "LUMEN_S3_ACCESS_KEY_ID": "lumen-test",
        "LUMEN_S3_SECRET_ACCESS_KEY": "lumen-test-secret",
        "LUMEN_S3_TIMEOUT_SECONDS": "0.5",
    }
    with settings_env(unreachable):
        assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.retry
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.attempts) == (JobState.queued, 1)
        assert job.error.startswith("BlobStoreError: S3 bucket 'lumen'") and "Could not connect" in job.error
    # The store is back: the next try does the job.
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
