"""Job life cycle on real Postgres, with the task really sent to Redis only after commit."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import update

from app.db import session_scope
from app.jobs import service as jobs_service
from app.tables import AiModel, Instance, Job, JobState, Series, Study
from tests.conftest import broker_redis, queue_key


def _messages_for(job_id: int, queue: str = "gpu") -> list[dict]:
    """Celery messages waiting in the Redis queue whose argument is this job id."""
    found = []
    for raw in broker_redis().lrange(queue_key(queue), 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        if args == [job_id]:
            found.append(message)
    return found


@pytest.fixture
def op_model():
    """A registered model that accepts a made-up modality, so no other test's uploads pick it."""
    modality = "T" + secrets.token_hex(3).upper()
    with session_scope() as session:
        model = AiModel(
            name=f"test-model-{modality}", version="1", task="classification", labels=["a", "b"],
            modalities=[modality], input_spec={}, weights_sha256="0" * 64, card={},
        )
        session.add(model)
        session.flush()
        model_id = model.id
    yield model_id, modality
    with session_scope() as session:
        session.execute(update(AiModel).where(AiModel.id == model_id).values(is_active=False))


def _study_with_instances(session, modality: str, count: int = 1) -> tuple[Study, list[Instance]]:
    study = Study(study_instance_uid=generate_uid(), modality=modality)
    series = Series(study=study, series_instance_uid=generate_uid(), modality=modality)
    instances = [
        Instance(series=series, sop_instance_uid=generate_uid(), source_format="dicom", modality=modality,
                 rows=4, columns=4, storage_key="none", sha256=secrets.token_hex(32), size_bytes=1)
        for _ in range(count)
    ]
    session.add(study)
    session.flush()
    return study, instances


def test_a_job_is_sent_only_after_its_row_is_committed(op_model) -> None:
    _, modality = op_model
    with session_scope() as session:
        study, instances = _study_with_instances(session, modality)
        [job] = jobs_service.plan_jobs(session, study_id=study.id, instances=instances)
        job_id = job.id
        assert _messages_for(job_id) == []  # flushed, not committed: nothing sent yet
    [message] = _messages_for(job_id)
    assert message["headers"]["task"] == "lumen.run_job"


def test_nothing_is_sent_when_the_transaction_rolls_back(op_model) -> None:
    _, modality = op_model
    with pytest.raises(RuntimeError), session_scope() as session:
        study, instances = _study_with_instances(session, modality)
        [job] = jobs_service.plan_jobs(session, study_id=study.id, instances=instances)
        job_id = job.id
        raise RuntimeError("the request failed after planning")
    assert _messages_for(job_id) == []
    with session_scope() as session:
        assert session.get(Job, job_id) is None


def test_no_job_for_a_modality_no_model_accepts(op_model) -> None:
    with session_scope() as session:
        study, instances = _study_with_instances(session, "ZZNOMODEL")
        assert jobs_service.plan_jobs(session, study_id=study.id, instances=instances) == []
        assert jobs_service.summarise([]).state == "no_model"


def _planned_job(modality: str) -> int:
    with session_scope() as session:
        study, instances = _study_with_instances(session, modality)
        [job] = jobs_service.plan_jobs(session, study_id=study.id, instances=instances)
        return job.id


def test_claim_is_exclusive_and_a_finished_job_is_not_claimed_again(op_model) -> None:
    job_id = _planned_job(op_model[1])
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="w1") is True
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="w2") is False
        job = jobs_service.get_job(session, job_id=job_id)
        assert (job.state, job.attempts, job.worker) == (JobState.running, 1, "w1")
        jobs_service.mark_done(session, job=job, timings={"total_s": 0.1})
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="w3") is False
        assert jobs_service.get_job(session, job_id=job_id).progress == 100


def test_a_running_job_whose_worker_died_can_be_claimed_again(op_model) -> None:
    job_id = _planned_job(op_model[1])
    with session_scope() as session:
        jobs_service.claim(session, job_id=job_id, worker="dead")
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=datetime.now(UTC) - timedelta(hours=1)))
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="alive") is True
        assert jobs_service.get_job(session, job_id=job_id).attempts == 2


def test_failure_with_retry_requeues_and_without_retry_keeps_the_reason(op_model) -> None:
    job_id = _planned_job(op_model[1])
    with session_scope() as session:
        jobs_service.claim(session, job_id=job_id, worker="w")
        jobs_service.mark_failed(session, job_id=job_id, error="CUDA out of memory", retry=True)
    with session_scope() as session:
        job = jobs_service.get_job(session, job_id=job_id)
        assert (job.state, job.error) == (JobState.queued, "CUDA out of memory")
        jobs_service.claim(session, job_id=job_id, worker="w")
        jobs_service.mark_failed(session, job_id=job_id, error="cannot read the image: truncated", retry=False)
    with session_scope() as session:
        job = jobs_service.get_job(session, job_id=job_id)
        assert (job.state, job.error, job.attempts) == (JobState.failed, "cannot read the image: truncated", 2)
        assert jobs_service.summarise([job]).error == "cannot read the image: truncated"


def test_sweeper_resends_a_job_the_broker_lost(op_model) -> None:
    job_id = _planned_job(op_model[1])
    broker_redis().delete(queue_key("gpu"))  # the broker lost every message
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(sent_at=datetime.now(UTC) - timedelta(hours=1)))
    with session_scope() as session:
        assert job_id in jobs_service.resend_stale(session)
    assert len(_messages_for(job_id)) == 1
    with session_scope() as session:  # just re-sent: not stale again
        assert job_id not in jobs_service.resend_stale(session)


def test_get_job_api(app_client, auth_headers, op_model) -> None:
    job_id = _planned_job(op_model[1])
    response = app_client.get(f"/api/jobs/{job_id}", headers=auth_headers("reader"))
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["progress"]) == ("queued", 0)
    assert app_client.get(f"/api/jobs/{job_id}").status_code == 401
    missing = app_client.get("/api/jobs/999999999", headers=auth_headers("reader"))
    assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]


def test_a_model_whose_card_says_not_to_serve_gets_no_jobs(op_model) -> None:
    model_id, modality = op_model
    with session_scope() as session:
        session.get(AiModel, model_id).card = {"serve_automatically": False}
    with session_scope() as session:
        study, instances = _study_with_instances(session, modality)
        assert jobs_service.plan_jobs(session, study_id=study.id, instances=instances) == []
