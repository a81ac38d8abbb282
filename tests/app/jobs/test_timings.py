"""What the jobs' stage timings say: a model's medians and stage shares (admin), a queued job's place."""

from __future__ import annotations

import hashlib
import html
import io
import secrets
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid
from sqlalchemy import update

from app.db import session_scope
from app.jobs import timings
from app.storage import get_blob_store
from app.tables import AiModel, Instance, Job, JobPriority, JobState, Series, Study

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _png() -> bytes:
    """A distinct 2 x 2 grayscale PNG, stored for real: other tests (the fuzz run) read every instance."""
    buffer = io.BytesIO()
    Image.fromarray(np.array([[secrets.randbelow(256), 0], [0, 255]], dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def model_id() -> int:
    with session_scope() as session:
        model = AiModel(name=f"timed-{generate_uid()[-8:]}", version="1", task="classification", labels=["a", "b"],
                        modalities=["OT"], calibration_temperature=1.0, weights_sha256="0" * 64, card={},
                        input_spec={})
        session.add(model)
        session.flush()
        return model.id


def _job(model_id: int, *, state: JobState = JobState.done, queue: str = "timing", priority: int = 5,
         created: datetime = T0, started: datetime | None = None, timings_: dict | None = None) -> int:
    with session_scope() as session:
        study = Study(study_instance_uid=generate_uid(), modality="OT")
        series = Series(study=study, series_instance_uid=generate_uid(), modality="OT")
        png = _png()
        sha = hashlib.sha256(png).hexdigest()
        instance = Instance(series=series, sop_instance_uid=generate_uid(), source_format="png", modality="OT",
                            rows=2, columns=2, samples_per_pixel=1, storage_key=get_blob_store().put(sha, png),
                            sha256=sha, size_bytes=len(png))
        job = Job(study=study, instance=instance, model_id=model_id, methods=["gradcam"], queue=queue, state=state,
                  priority=priority, created_at=created, started_at=started,
                  finished_at=started + timedelta(seconds=1) if started and state == JobState.done else None,
                  timings=timings_ or {})
        session.add(job)
        session.flush()
        return job.id


def _stage_timings(total: float, overhead: float, first: float) -> dict[str, float]:
    return {"total_s": total, "overhead_s": overhead, "first_answer_s": first, "first_map_s": first + 0.1,
            "all_maps_s": first + 0.5, "decode_s": 0.1 * total, "scores_s": 0.5 * total, "urgent_s": 0.0}


def test_a_models_medians_and_stage_shares_are_those_of_its_answered_jobs(model_id: int) -> None:
    for seconds, (total, overhead, first) in enumerate([(1.0, 0.1, 0.2), (2.0, 0.4, 0.3), (3.0, 0.3, 0.9)]):
        started = T0 + timedelta(seconds=2 * seconds)
        _job(model_id, created=started - timedelta(seconds=seconds + 1), started=started,
             timings_=_stage_timings(total, overhead, first))
    # Refused by the gate (no first answer) and from before stage timings: not counted.
    _job(model_id, started=T0, timings_={"total_s": 50.0, "out_of_domain": 1.0})
    with session_scope() as session:
        summary = timings.model_timings(session, model_id=model_id)
    assert summary is not None and summary.jobs == 3
    assert (summary.first_answer_s, summary.total_s, summary.wait_s) == (0.3, 2.0, 2.0)
    assert summary.first_map_s == pytest.approx(0.4) and summary.all_maps_s == pytest.approx(0.8)
    assert summary.overhead_share == pytest.approx(0.8 / 6.0)
    shares = {stage.key: stage.share for stage in summary.stages}
    assert shares["decode_s"] == pytest.approx(0.1) and shares["scores_s"] == pytest.approx(0.5)
    assert shares["predict_s"] == 0.0


def test_no_summary_before_an_answered_job(model_id: int) -> None:
    with session_scope() as session:
        assert timings.model_timings(session, model_id=model_id) is None


def test_a_queued_jobs_place_counts_the_running_the_more_urgent_and_the_older(model_id: int) -> None:
    queue = f"place-{generate_uid()[-6:]}"
    _job(model_id, queue=queue, started=T0, timings_={"total_s": 2.0})  # the queue's pace: 2 s a job
    _job(model_id, queue=queue, state=JobState.running, started=T0)
    older_demo = _job(model_id, queue=queue, state=JobState.queued, priority=JobPriority.demo, created=T0)
    mine = _job(model_id, queue=queue, state=JobState.queued, priority=JobPriority.batch, created=T0 + timedelta(1))
    _job(model_id, queue=queue, state=JobState.queued, priority=JobPriority.batch, created=T0)  # older, same priority
    _job(model_id, queue=queue, state=JobState.queued, priority=JobPriority.interactive, created=T0 + timedelta(2))
    _job(model_id, queue="elsewhere", state=JobState.queued, priority=JobPriority.interactive, created=T0)
    with session_scope() as session:
        place = timings.queue_place(session, session.get(Job, mine))
        assert (place.position, place.jobs_ahead, place.expected_start_s) == (4, 3, 6.0)
        assert timings.queue_place(session, session.get(Job, older_demo)).position == 5
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == mine).values(state=JobState.running))
    with session_scope() as session:
        assert timings.queue_place(session, session.get(Job, mine)).position is None


def test_the_job_route_says_where_a_queued_job_stands(model_id: int, app_client, auth_headers) -> None:
    job_id = _job(model_id, queue=f"route-{generate_uid()[-6:]}", state=JobState.queued,
                  priority=JobPriority.interactive)
    body = app_client.get(f"/api/jobs/{job_id}", headers=auth_headers("reader")).json()
    assert body["priority"] == 0
    assert body["place"] == {"position": 1, "jobs_ahead": 0, "expected_start_s": None}


def test_the_admin_model_page_shows_the_stage_table(model_id: int, app_client, auth_headers) -> None:
    _job(model_id, started=T0, created=T0 - timedelta(seconds=4), timings_=_stage_timings(2.0, 0.2, 0.5))
    page = html.unescape(app_client.get(f"/admin/models/{model_id}", headers=auth_headers("admin")).text)
    assert "Medians of its last 1 answered jobs: queued 4.00 s" in page
    assert "prediction stored after 0.50 s" in page and "Overhead (everything but the network's work) 10%" in page
    row = page[page.index('data-stage="scores_s"'):]
    assert "1.00 s" in row[: row.index("</tr>")] and "50%" in row[: row.index("</tr>")]
