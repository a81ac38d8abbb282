"""Faults with real processes, on a private Postgres and a private Redis (tests/servers.py) that the tests may
kill and restart: workers SIGKILLed or frozen mid-job, Postgres restarted mid-job and mid-read, Redis restarted
empty, and a backlog that the sweeper must leave alone.

`lumen serve --no-worker` runs the sweeper (a pass every second; a running job silent for 3 s is taken back; 2
attempts at most); `lumen worker` processes do the jobs (tests/e2e/fault_world.py). Every job must end done
exactly once (one prediction, one heatmap per method), or failed with the reason in its row. The figures go to
test-output/faults.json (docs/faults.md).
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from app.auth import service as auth_service
from app.tables import JobState, Read, Role, Study
from tests.conftest import TEST_OUTPUT
from tests.e2e.fault_world import (
    FAST,
    NAMESPACE,
    QUEUE,
    SLOW,
    STALE_SECONDS,
    SWEEP_SECONDS,
    World,
    computing,
    finished,
    job_of,
    kill,
    open_world,
    outcome_of,
    queue_job,
    signal_all,
    start_worker,
    state_of,
)
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.slow

FIGURES: dict[str, dict[str, object]] = {}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with open_world() as opened:
        yield opened
    TEST_OUTPUT.mkdir(exist_ok=True)
    (TEST_OUTPUT / "faults.json").write_text(json.dumps(FIGURES, indent=2))


def test_a_worker_killed_mid_job_then_replaced_does_the_job_once(world: World) -> None:
    first, _ = start_worker(world, "a1")
    job_id = queue_job(world, SLOW)
    wait_for(lambda: computing(world, job_id, 1), timeout=60, what="the first attempt to compute")
    kill(first)
    killed = time.monotonic()
    second, node = start_worker(world, "a2")
    try:
        [outcome] = wait_for(lambda: finished(world, [job_id]), timeout=90, what="the job to end")
        recovered = time.monotonic() - killed
        assert (outcome.state, outcome.attempts, outcome.worker, outcome.error) == (JobState.done, 2, node, "")
        assert (outcome.predictions, outcome.heatmaps) == (1, ["smoothgrad"])
        assert [job_id] in world.sweeper_lines("requeued silent jobs")

        # The killed worker's message, given back by Redis after its visibility timeout (here by hand, as
        # kombu does), reaches the live worker: a no-op.
        client = world.redis.client()
        taken = {tag: json.dumps(json.loads(entry)[0]) for tag, entry in client.hgetall(NAMESPACE + "unacked").items()}
        [(tag, message)] = [(tag, message) for tag, message in taken.items() if job_of(message) == job_id]
        client.lpush(NAMESPACE + QUEUE, message)
        client.hdel(NAMESPACE + "unacked", tag)
        client.zrem(NAMESPACE + "unacked_index", tag)
        skipped = f"job {job_id} is finished or taken: nothing to do".encode()
        wait_for(lambda: skipped in second.log_path.read_bytes(), timeout=30, what="the redelivered task to be skipped")
        assert outcome_of(world, job_id) == outcome
    finally:
        second.stop()
    FIGURES["worker SIGKILLed mid-job, another started"] = {
        "kill_to_done_s": round(recovered, 1),
        "attempts": outcome.attempts,
        "predictions": outcome.predictions,
        "heatmaps": len(outcome.heatmaps),
    }


def test_a_job_whose_workers_die_on_every_attempt_fails_with_the_reason(world: World) -> None:
    first, _ = start_worker(world, "b1")
    job_id = queue_job(world, SLOW)
    wait_for(lambda: computing(world, job_id, 1), timeout=60, what="the first attempt to compute")
    kill(first)
    killed = time.monotonic()
    wait_for(lambda: state_of(world, job_id)[:2] == (JobState.queued, 1), timeout=30, what="the sweeper to requeue it")
    requeued = time.monotonic() - killed
    second, node = start_worker(world, "b2")
    wait_for(lambda: computing(world, job_id, 2), timeout=60, what="the second attempt to compute")
    kill(second)
    killed = time.monotonic()
    [outcome] = wait_for(lambda: finished(world, [job_id]), timeout=30, what="the job to fail")
    failed = time.monotonic() - killed
    assert (outcome.state, outcome.attempts, outcome.worker) == (JobState.failed, 2, node)
    assert re.fullmatch(
        rf"failed after 2 attempts \(LUMEN_MAX_JOB_ATTEMPTS=2\): worker {re.escape(node)} stopped answering during "
        r"attempt 2 \(last heartbeat \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)",
        outcome.error,
    ), outcome.error
    # The prediction was stored before the first kill (results are stored stage by stage, workers/stages.py)
    # and is kept, once; the map never finished.
    assert (outcome.predictions, outcome.heatmaps) == (1, [])
    assert world.waiting_messages() == []  # nothing re-sent for a failed job
    FIGURES["worker SIGKILLed on every attempt, none left"] = {
        "kill_to_requeued_s": round(requeued, 1),
        "last_kill_to_failed_s": round(failed, 1),
        "attempts": outcome.attempts,
        "predictions": outcome.predictions,
    }


def test_a_frozen_worker_that_comes_back_after_its_job_was_taken_over_stores_nothing(world: World) -> None:
    workers = {node: process for process, node in (start_worker(world, name) for name in ("d1", "d2"))}
    job_id = queue_job(world, SLOW)
    # Past the prediction (stored at progress 40), into the maps: the frozen worker has its map to store when it
    # wakes.
    wait_for(lambda: computing(world, job_id, 1, progress=50), timeout=60, what="the first attempt to compute")
    frozen_node = outcome_of(world, job_id).worker
    frozen = workers.pop(frozen_node)
    [(node, other)] = workers.items()
    # Stopped, not dead (a stalled host, a partition, the database away past the limit): it misses its beats.
    signal_all(frozen, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        [outcome] = wait_for(lambda: finished(world, [job_id]), timeout=90, what="the other worker to do the job")
        taken_over = time.monotonic() - stopped
    finally:
        signal_all(frozen, signal.SIGCONT)
        other.stop()
    lost = f"job {job_id}: attempt 1 by {frozen_node} lost its claim".encode()
    try:
        wait_for(lambda: lost in frozen.log_path.read_bytes(), timeout=60, what="the frozen worker to come back")
    finally:
        frozen.stop()
    assert (outcome.state, outcome.attempts, outcome.worker, outcome.error) == (JobState.done, 2, node, "")
    assert outcome_of(world, job_id) == outcome  # its late results were dropped, not stored or marked done
    assert (outcome.predictions, outcome.heatmaps) == (1, ["smoothgrad"])
    FIGURES["worker frozen (SIGSTOP) past the stale limit, then resumed"] = {
        "freeze_to_done_by_another_s": round(taken_over, 1),
        "attempts": outcome.attempts,
        "predictions": outcome.predictions,
        "heatmaps": len(outcome.heatmaps),
        "late_results_stored": 0,
    }


def test_postgres_restarted_mid_job_the_job_is_done_once(world: World) -> None:
    worker, node = start_worker(world, "c")
    try:
        job_id = queue_job(world, SLOW)
        wait_for(lambda: computing(world, job_id, 1), timeout=60, what="the job to compute")
        down = world.postgres.restart(down_seconds=0.5)
        back = datetime.now(UTC)
        [outcome] = wait_for(lambda: finished(world, [job_id]), timeout=60, what="the job to end")
    finally:
        worker.stop()
    assert (outcome.state, outcome.attempts, outcome.worker, outcome.error) == (JobState.done, 1, node, "")
    assert (outcome.predictions, outcome.heatmaps) == (1, ["smoothgrad"])
    assert outcome.finished_at is not None and outcome.finished_at > back  # the restart was mid-job
    log = worker.log_path.read_text(errors="replace")
    FIGURES["Postgres restarted mid-job"] = {
        "postgres_down_s": round(down, 2),
        "attempts": outcome.attempts,
        "predictions": outcome.predictions,
        "missed_heartbeats": log.count(f"heartbeat for jobs [{job_id}] failed"),
        "store_retries": log.count(f"storing job {job_id}: the database did not answer"),
    }


def test_postgres_down_until_the_worker_stores_the_job_is_done_once(world: World) -> None:
    worker, node = start_worker(world, "c2")
    try:
        job_id = queue_job(world, SLOW)
        wait_for(lambda: computing(world, job_id, 1, progress=50), timeout=60, what="the maps to be computed")
        world.postgres.stop()
        stopped = time.monotonic()
        retrying = f"storing job {job_id}: the database did not answer".encode()
        wait_for(lambda: retrying in worker.log_path.read_bytes(), timeout=60, what="the store to be retried",
                 interval=0.05)
        world.postgres.start()
        down = time.monotonic() - stopped
        [outcome] = wait_for(lambda: finished(world, [job_id]), timeout=60, what="the job to end")
    finally:
        worker.stop()
    # Down longer than the stale limit: the sweeper may take the job back before the worker's next try gets
    # through (attempt 2, the late store dropped by the claim) or not (attempt 1). Either way, once.
    assert (outcome.state, outcome.worker, outcome.error) == (JobState.done, node, "")
    assert outcome.attempts in (1, 2)
    assert (outcome.predictions, outcome.heatmaps) == (1, ["smoothgrad"])
    log = worker.log_path.read_text(errors="replace")
    FIGURES["Postgres down from mid-compute until the worker stores"] = {
        "postgres_down_s": round(down, 1),
        "attempts": outcome.attempts,
        "store_retries": log.count(retrying.decode()),
        "late_store_dropped": log.count(f"job {job_id}: attempt 1 by {node} lost its claim"),
        "predictions": outcome.predictions,
    }


def test_postgres_restarted_mid_read_the_read_is_submitted_once(world: World) -> None:
    with world.session() as session:
        user = auth_service.create_user(
            session, email=f"reader-{uuid.uuid4().hex[:8]}@example.org", password="correct horse battery",
            role=Role.reader,
        )
        token, _ = auth_service.issue_token(session, user=user, kind="bearer", hours=1)
        session.commit()
    with world.session() as session:
        study = Study(study_instance_uid=generate_uid(), modality="OP")
        session.add(study)
        session.commit()
    study_id = study.id
    headers = {"Authorization": f"Bearer {token}"}
    client_id = str(uuid.uuid4())
    url = f"{world.base_url}/api/reads/{client_id}"
    draft = httpx.put(url, json={"study_id": study_id, "answers": {"dr_grade": 1}}, headers=headers, timeout=10)
    assert draft.status_code == 201, draft.text
    read = {"study_id": study_id, "answers": {"dr_grade": 2, "dme": False, "confidence": 4}, "time_spent_seconds": 9}

    answers: list[int | str] = []

    def submit_until_answered() -> None:
        # What the reading room does: send again, with the same client id, until the server answers.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                response = httpx.post(f"{url}/submit", json=read, headers=headers, timeout=10)
                answers.append(response.status_code)
                if response.status_code < 500:
                    return
            except httpx.HTTPError as exc:
                answers.append(type(exc).__name__)
            time.sleep(0.2)

    world.postgres.stop()
    stopped = time.monotonic()
    reader = threading.Thread(target=submit_until_answered)
    reader.start()
    time.sleep(1.0)
    world.postgres.start()
    reader.join(timeout=70)
    answered = time.monotonic() - stopped
    assert answers and answers[-1] == 201, answers
    assert all(answer != 201 for answer in answers[:-1]) and len(answers) > 1, answers  # refused while down
    again = httpx.post(f"{url}/submit", json=read, headers=headers, timeout=10)
    assert again.status_code == 200 and again.json()["state"] == "submitted"
    with world.session() as session:
        reads = session.scalars(select(Read).where(Read.client_id == client_id)).all()
        assert [(r.state, r.dr_grade) for r in reads] == [("submitted", 2)]
    FIGURES["Postgres restarted mid-read"] = {
        "tries": len(answers),
        "answers_while_down": sorted({str(a) for a in answers[:-1]}),
        "stop_to_submitted_s": round(answered, 1),
        "reads": len(reads),
    }


def test_redis_restarted_empty_every_queued_job_is_done_once(world: World) -> None:
    job_ids = [queue_job(world, FAST) for _ in range(5)]
    assert world.waiting_messages() == job_ids  # no worker yet: the messages wait in Redis
    down = world.redis.restart()
    restarted = time.monotonic()
    assert world.waiting_messages() == []
    worker, _ = start_worker(world, "e")
    try:
        outcomes = wait_for(lambda: finished(world, job_ids), timeout=90, what="the 5 jobs to end")
    finally:
        worker.stop()
    healed = time.monotonic() - restarted
    assert [(o.state, o.attempts, o.predictions, o.heatmaps) for o in outcomes] == [
        (JobState.done, 1, 1, ["gradcam"])
    ] * 5
    resent = [job for line in world.sweeper_lines("re-sent lost jobs") for job in line if job in job_ids]
    assert sorted(resent) == job_ids  # each once
    FIGURES["Redis restarted empty with 5 queued jobs"] = {
        "redis_down_s": round(down, 2),
        "restart_to_all_done_s": round(healed, 1),
        "resent": len(resent),
        "predictions": sum(o.predictions for o in outcomes),
    }


def test_the_sweeper_sends_nothing_for_a_backlog_of_40_waiting_jobs(world: World) -> None:
    job_ids = [queue_job(world, FAST) for _ in range(40)]
    # One more job whose message the broker lost: the sweeper's passes must see it, and only it.
    lost = queue_job(world, FAST)
    client = world.redis.client()
    [raw] = [raw for raw in client.lrange(NAMESPACE + QUEUE, 0, -1) if job_of(raw) == lost]
    client.lrem(NAMESPACE + QUEUE, 0, raw)
    assert world.waiting_messages() == job_ids
    # Past the grace window (all were sent over LUMEN_STALE_JOB_SECONDS ago), then several sweeper passes.
    time.sleep(STALE_SECONDS + 4 * SWEEP_SECONDS)
    assert world.waiting_messages() == [*job_ids, lost]  # depth 41: the 40 waiting ones were not sent again
    resent = [job for line in world.sweeper_lines("re-sent lost jobs") for job in line if job in [*job_ids, lost]]
    assert resent == [lost]
    worker, _ = start_worker(world, "f")
    started = time.monotonic()
    try:
        outcomes = wait_for(lambda: finished(world, [*job_ids, lost]), timeout=150, what="the backlog to drain")
    finally:
        worker.stop()
    drained = time.monotonic() - started
    assert [(o.state, o.attempts, o.predictions, o.heatmaps) for o in outcomes] == [
        (JobState.done, 1, 1, ["gradcam"])
    ] * 41
    assert world.waiting_messages() == []
    FIGURES["backlog of 40 waiting jobs (and 1 lost)"] = {
        "queue_depth_after_passes": len(job_ids),
        "messages_sent_by_sweeper_for_waiting_jobs": 0,
        "messages_sent_by_sweeper_for_the_lost_job": 1,
        "drain_s": round(drained, 1),
        "predictions": sum(o.predictions for o in outcomes),
    }
