"""Job life cycle on real Postgres, with the task really sent to Redis only after commit."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import text, update

from app import queue
from app.config import get_settings
from app.db import session_scope
from app.jobs import service as jobs_service
from app.queue import RUN_JOB_TASK, sender
from app.tables import AiModel, Instance, Job, JobState, Series, Study
from tests.conftest import BROKER_NAMESPACE, broker_redis, queue_key
from tests.settings import settings_env


def _raw_messages_for(job_id: int, queue: str = "gpu") -> list[bytes]:
    """Celery messages waiting in the Redis queue whose argument is this job id, as stored."""
    found = []
    for raw in broker_redis().lrange(queue_key(queue), 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        if args == [job_id]:
            found.append(raw)
    return found


def _messages_for(job_id: int, queue: str = "gpu") -> list[dict]:
    return [json.loads(raw) for raw in _raw_messages_for(job_id, queue)]


def _drop_messages_for(job_id: int, queue: str = "gpu") -> None:
    """The broker loses this job's messages (and only this job's: other tests' messages stay)."""
    for raw in _raw_messages_for(job_id, queue):
        broker_redis().lrem(queue_key(queue), 0, raw)
    assert _messages_for(job_id, queue) == []


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


def _claimed(job_id: int, worker: str) -> jobs_service.Claim:
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker=worker) is True
        attempt = jobs_service.get_job(session, job_id=job_id).attempts
    return jobs_service.Claim(job_id=job_id, attempt=attempt, worker=worker)


def _set(job_id: int, **values: object) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _row(job_id: int) -> Job:
    with session_scope() as session:
        job = jobs_service.get_job(session, job_id=job_id)
        session.expunge(job)
        return job


HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


def test_claim_is_exclusive_and_a_finished_job_is_not_claimed_again(op_model) -> None:
    job_id = _planned_job(op_model[1])
    claim = _claimed(job_id, "w1")
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="w2") is False
        job = jobs_service.get_job(session, job_id=job_id)
        assert (job.state, job.attempts, job.worker) == (JobState.running, 1, "w1")
        assert job.heartbeat_at is not None
        assert jobs_service.finish(session, claim=claim, timings={"total_s": 0.1}) is True
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="w3") is False
        assert jobs_service.get_job(session, job_id=job_id).progress == 100


def test_liveness_is_the_heartbeat_not_the_last_write_of_the_row(op_model) -> None:
    job_id = _planned_job(op_model[1])
    _claimed(job_id, "beating")
    # An old row that beats is alive: re-sending or any other write no longer makes a dead job look alive.
    _set(job_id, updated_at=HOUR_AGO)
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="thief") is False
    # A silent worker's job is claimable, whatever else wrote to the row meanwhile.
    _set(job_id, heartbeat_at=HOUR_AGO, updated_at=datetime.now(UTC))
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="alive") is True
    job = _row(job_id)
    assert (job.attempts, job.worker) == (2, "alive")


def test_a_silent_job_on_its_last_attempt_is_not_claimed_again(op_model, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "max_job_attempts", 2)
    job_id = _planned_job(op_model[1])
    _claimed(job_id, "first")
    _set(job_id, heartbeat_at=HOUR_AGO)
    _claimed(job_id, "second")
    _set(job_id, heartbeat_at=HOUR_AGO)
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="third") is False
    assert (_row(job_id).attempts, _row(job_id).worker) == (2, "second")


def test_a_lost_claim_neither_beats_nor_finishes_nor_fails_the_job(op_model) -> None:
    job_id = _planned_job(op_model[1])
    old = _claimed(job_id, "w")
    _set(job_id, heartbeat_at=HOUR_AGO)
    new = _claimed(job_id, "w")  # the same worker name, a later attempt: the attempt tells them apart
    _set(job_id, heartbeat_at=HOUR_AGO)
    with session_scope() as session:
        assert jobs_service.touch(session, claims=[old]) == []
        assert jobs_service.finish(session, claim=old, timings={}) is False
        assert jobs_service.mark_failed(session, claim=old, error="late", retry=False) is False
        jobs_service.set_progress(session, claim=old, progress=90)
    job = _row(job_id)
    assert (job.state, job.attempts, job.progress, job.error) == (JobState.running, 2, 0, "")
    assert job.heartbeat_at < datetime.now(UTC) - timedelta(minutes=59)
    with session_scope() as session:
        assert jobs_service.touch(session, claims=[old, new]) == [job_id]
        jobs_service.set_progress(session, claim=new, progress=90)
    assert _row(job_id).heartbeat_at > datetime.now(UTC) - timedelta(minutes=1)
    assert _row(job_id).progress == 90


def test_failure_with_retry_requeues_and_without_retry_keeps_the_reason(op_model) -> None:
    job_id = _planned_job(op_model[1])
    claim = _claimed(job_id, "w")
    with session_scope() as session:
        assert jobs_service.mark_failed(session, claim=claim, error="CUDA out of memory", retry=True)
    job = _row(job_id)
    assert (job.state, job.error) == (JobState.queued, "CUDA out of memory")
    claim = _claimed(job_id, "w")
    with session_scope() as session:
        jobs_service.mark_failed(session, claim=claim, error="cannot read the image: truncated", retry=False)
    job = _row(job_id)
    assert (job.state, job.error, job.attempts) == (JobState.failed, "cannot read the image: truncated", 2)
    assert jobs_service.summarise([job]).error == "cannot read the image: truncated"


def test_sweeper_takes_back_a_silent_job_and_counts_the_attempt_at_the_next_claim(op_model) -> None:
    job_id = _planned_job(op_model[1])
    _claimed(job_id, "celery@gone")
    _drop_messages_for(job_id)
    _set(job_id, heartbeat_at=HOUR_AGO, updated_at=datetime.now(UTC))
    with session_scope() as session:
        sweep = jobs_service.resend_stale(session)
    assert job_id in sweep.requeued and job_id not in sweep.resent + sweep.failed
    job = _row(job_id)
    assert (job.state, job.attempts, job.progress) == (JobState.queued, 1, 0)
    assert job.error.startswith("worker celery@gone stopped answering during attempt 1 (last heartbeat 20")
    assert job.error.endswith("; tried again")
    assert len(_messages_for(job_id)) == 1  # sent again once the pass committed
    _claimed(job_id, "celery@next")
    assert (_row(job_id).attempts, _row(job_id).error) == (2, "")


def test_sweeper_fails_a_silent_job_on_its_last_attempt_with_the_reason(op_model, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "max_job_attempts", 2)
    job_id = _planned_job(op_model[1])
    _claimed(job_id, "celery@a")
    _set(job_id, heartbeat_at=HOUR_AGO)
    _claimed(job_id, "celery@b")
    _set(job_id, heartbeat_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    _drop_messages_for(job_id)
    with session_scope() as session:
        sweep = jobs_service.resend_stale(session)
    assert job_id in sweep.failed and job_id not in sweep.requeued
    job = _row(job_id)
    assert (job.state, job.attempts) == (JobState.failed, 2) and job.finished_at is not None
    assert job.error == (
        "failed after 2 attempts (LUMEN_MAX_JOB_ATTEMPTS=2): worker celery@b stopped answering during attempt 2 "
        "(last heartbeat 2026-01-02 03:04:05 UTC)"
    )
    assert _messages_for(job_id) == []


def test_sweeper_leaves_a_running_job_whose_worker_beats(op_model) -> None:
    job_id = _planned_job(op_model[1])
    _claimed(job_id, "busy")
    _set(job_id, updated_at=HOUR_AGO, sent_at=HOUR_AGO, started_at=HOUR_AGO)
    with session_scope() as session:
        assert job_id not in jobs_service.resend_stale(session).requeued
    assert (_row(job_id).state, _row(job_id).attempts) == (JobState.running, 1)


def test_sweeper_resends_a_job_the_broker_lost_once(op_model) -> None:
    job_id = _planned_job(op_model[1])
    _drop_messages_for(job_id)  # the broker lost its message
    _set(job_id, sent_at=HOUR_AGO)
    with session_scope() as session:
        assert job_id in jobs_service.resend_stale(session).resent
    assert len(_messages_for(job_id)) == 1
    _set(job_id, sent_at=HOUR_AGO)  # even long after: its message waits in the queue now
    with session_scope() as session:
        assert job_id not in jobs_service.resend_stale(session).resent
    assert len(_messages_for(job_id)) == 1


def test_one_sweeper_pass_at_a_time_across_processes(op_model) -> None:
    """Another API process's pass holds the sweeper's lock: this pass does nothing, the next one sweeps."""
    from app.db import get_engine
    from app.jobs import sweeper

    job_id = _planned_job(op_model[1])
    _drop_messages_for(job_id)
    _set(job_id, sent_at=HOUR_AGO)
    with get_engine().connect() as other_process:
        other_process.execute(text("SELECT pg_advisory_lock(:key)"), {"key": sweeper._SWEEPER_LOCK})
        assert not sweeper.sweep_once()
        assert _messages_for(job_id) == []
        other_process.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": sweeper._SWEEPER_LOCK})
        other_process.commit()
    assert job_id in sweeper.sweep_once().resent
    assert len(_messages_for(job_id)) == 1


def test_sweeper_does_not_resend_jobs_that_wait_behind_a_backlog(op_model) -> None:
    waiting = [_planned_job(op_model[1]) for _ in range(5)]
    with session_scope() as session:
        session.execute(update(Job).where(Job.id.in_(waiting)).values(sent_at=HOUR_AGO))
    for _ in range(3):
        with session_scope() as session:
            assert not set(waiting) & set(jobs_service.resend_stale(session).resent)
    assert [len(_messages_for(job_id)) for job_id in waiting] == [1] * 5


@pytest.fixture
def own_queue(monkeypatch: pytest.MonkeyPatch) -> str:
    """Jobs planned in the test go to a queue of their own, so that a message taken from it is this test's."""
    name = f"sweep-{secrets.token_hex(4)}"
    monkeypatch.setattr(get_settings(), "inference_queue", name)
    return name


@contextmanager
def _taken_by_a_worker(queue: str, *, seconds_ago: float) -> Iterator[None]:
    """A worker takes the next message of `queue` (kombu moves it to the `unacked` hash, as a worker's
    prefetch does) `seconds_ago`; it is acknowledged at the end."""
    with sender().connection_for_read() as connection:
        channel = connection.default_channel
        message = channel.basic_get(queue, no_ack=False)
        assert message is not None
        broker_redis().zadd(BROKER_NAMESPACE + "unacked_index", {message.delivery_tag: time.time() - seconds_ago})
        try:
            yield
        finally:
            channel.basic_ack(message.delivery_tag)


def test_sweeper_counts_a_message_a_worker_took_only_while_it_may_still_start_it(op_model, own_queue) -> None:
    job_id = _planned_job(op_model[1])
    _set(job_id, sent_at=HOUR_AGO)
    with _taken_by_a_worker(own_queue, seconds_ago=5):  # taken just now: the worker is about to claim it
        assert broker_redis().llen(queue_key(own_queue)) == 0
        with session_scope() as session:
            assert job_id not in jobs_service.resend_stale(session).resent
    queue.send_job(job_id, own_queue)
    _set(job_id, sent_at=HOUR_AGO)
    # Taken hours ago and never claimed: that worker died with it, and Redis gives it back only after an hour.
    with _taken_by_a_worker(own_queue, seconds_ago=3 * 60 * 60), session_scope() as session:
        assert job_id in jobs_service.resend_stale(session).resent
    assert len(_messages_for(job_id, own_queue)) == 1


def test_sweeper_leaves_a_job_waiting_for_its_retry_countdown(op_model, own_queue) -> None:
    job_id = _planned_job(op_model[1])
    _drop_messages_for(job_id, own_queue)
    # A failed attempt: back to queued, and the task sent again with a countdown, as workers.tasks does.
    claim = _claimed(job_id, "w")
    with session_scope() as session:
        jobs_service.mark_failed(session, claim=claim, error="CUDA out of memory", retry=True)
    sender().send_task(RUN_JOB_TASK, args=[job_id], queue=own_queue, countdown=3 * 60 * 60)
    _set(job_id, sent_at=HOUR_AGO)
    with session_scope() as session:  # waiting in the queue
        assert job_id not in jobs_service.resend_stale(session).resent
    with _taken_by_a_worker(own_queue, seconds_ago=2 * 60 * 60), session_scope() as session:
        # A worker holds it until its countdown ends, in hours: not lost.
        assert job_id not in jobs_service.resend_stale(session).resent
    assert _messages_for(job_id, own_queue) == []


def test_a_broker_that_cannot_be_listed_gets_only_long_lost_jobs_again(op_model) -> None:
    recent, old = _planned_job(op_model[1]), _planned_job(op_model[1])
    _set(recent, sent_at=datetime.now(UTC) - timedelta(minutes=30))
    _set(old, sent_at=datetime.now(UTC) - timedelta(seconds=queue.UNSEEN_RESEND_SECONDS + 60))
    with settings_env({"BROKER_URL": "amqp://guest@127.0.0.1:1//"}):
        with pytest.raises(queue.BrokerNotInspectable, match="amqp://"):
            queue.jobs_in_broker(["gpu"], taken_grace_seconds=120)
        with session_scope() as session:
            resent = jobs_service.resend_stale(session).resent
    assert old in resent and recent not in resent


def test_the_filesystem_broker_is_listed_from_its_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("BROKER_URL")
    with settings_env({"LUMEN_DATA_DIR": str(tmp_path)}):
        embedded = sender()
        embedded.send_task(RUN_JOB_TASK, args=[41], queue="gpu")
        embedded.send_task(RUN_JOB_TASK, args=[42], queue="cpu")
        embedded.send_task("some.other_task", args=[43], queue="gpu")
        (get_settings().broker_folder / "queue" / "1_half-written.gpu.msg").write_text('{"headers": ')
        assert queue.jobs_in_broker(["gpu"], taken_grace_seconds=120) == {41}
        assert queue.jobs_in_broker(["gpu", "cpu"], taken_grace_seconds=120) == {41, 42}


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
