"""The worklist says where a queued study stands (its first job's place in its queue, and when it may start),
and tells image uploads without a patient name apart (images and upload time) where identity is shown."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid

from app.db import session_scope
from app.jobs import timings
from app.tables import Job, JobPriority, JobState, Study
from tests.app.auth.helpers import sign_in
from tests.app.viewer import factories

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _study_with_jobs(queue: str, *jobs: tuple[JobState, datetime], patient_name: str = "Queue^Quinn") -> int:
    """A study whose image has these jobs (state, created) on `queue`; a done job has taken 4 s of work."""
    with session_scope() as session:
        stored = factories.insert_study(
            session, data=factories.png_bytes(), source_format="png", rows=48, columns=64, patient_name=patient_name
        )
        model = factories.add_model(session)
        for state, created in jobs:
            session.add(
                Job(
                    study_id=stored.study_id,
                    instance_id=stored.instance_id,
                    model_id=model.id,
                    methods=["gradcam"],
                    queue=queue,
                    state=state,
                    priority=JobPriority.batch,
                    created_at=created,
                    finished_at=created if state == JobState.done else None,
                    timings={"total_s": 4.0} if state == JobState.done else {},
                )
            )
        return stored.study_id


def test_a_queued_study_shows_its_place_and_expected_start(app_client, auth_headers, client, make_user):
    queue = f"wl-{generate_uid()[-8:]}"
    _study_with_jobs(queue, (JobState.done, T0), (JobState.running, T0))  # pace 4 s a job; one running
    first = _study_with_jobs(queue, (JobState.queued, T0 + timedelta(seconds=1)))
    # Two jobs queued: the study stands where the one a worker takes first stands.
    second = _study_with_jobs(
        queue, (JobState.queued, T0 + timedelta(seconds=3)), (JobState.queued, T0 + timedelta(seconds=2))
    )
    response = app_client.get("/api/worklist", headers=auth_headers("reader"))
    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()["studies"]}
    assert (rows[first]["ai_state"], rows[first]["queue_position"], rows[first]["queue_expected_start_s"]) == (
        "queued",
        2,
        4.0,
    )
    assert (rows[second]["queue_position"], rows[second]["queue_expected_start_s"]) == (3, 8.0)
    assert all(row["queue_position"] is None for row in rows.values() if row["ai_state"] != "queued")
    # The batched places are those of the one-job function (GET /api/jobs/{id}), job by job.
    with session_scope() as session:
        jobs = session.query(Job).filter(Job.queue == queue).all()
        batched = timings.queue_places(session, jobs)
        assert batched == {job.id: timings.queue_place(session, job) for job in jobs if job.state == JobState.queued}
        assert sorted(place.position for place in batched.values()) == [2, 3, 4]

    user, _ = make_user("reader")
    sign_in(client, user.email)
    page = client.get("/").text
    row = re.search(rf'<tr data-study-id="{second}".*?</tr>', page, re.S)
    assert row and re.search(r"queued</span>\s*<span class=\"queue-place\">3rd, about 8 s</span>", row.group(0))


def test_image_uploads_without_a_name_are_told_apart(app_client, auth_headers, db_session):
    ids = [_study_with_jobs("unnamed", patient_name="") for _ in range(2)]
    named_id = _study_with_jobs("unnamed", patient_name="Named^Nora")
    coordinator = app_client.get("/api/worklist", headers=auth_headers("coordinator")).json()["studies"]
    labels = {row["id"]: row["unnamed_label"] for row in coordinator if row["id"] in ids}
    for study_id in ids:
        uploaded = db_session.get(Study, study_id).created_at
        assert labels[study_id] == f"1 image uploaded {uploaded:%Y-%m-%d %H:%M:%S}"
    named = next(row for row in coordinator if row["id"] == named_id)
    assert (named["patient_name"], named["unnamed_label"]) == ("Named^Nora", None)
    # A reader sees each study's own pseudonym (app/visibility.py) and nothing more.
    reader = app_client.get("/api/worklist", headers=auth_headers("reader")).json()["studies"]
    seen = [row for row in reader if row["id"] in ids]
    assert all(row["patient_name"].startswith("P-") and row["unnamed_label"] is None for row in seen)
    assert len({row["patient_name"] for row in seen}) == 2
