"""The worklist's event stream over HTTP, read by a real client from the app under uvicorn: every row at first,
then only the rows that change as a job runs and finishes, new studies at the top, nothing again after a
reconnect, a reader-study blinding that takes the label off mid-stream, and the same bounds as the study streams."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.db import session_scope
from app.live import streams as live_streams
from app.tables import JobState
from tests.app.live.conftest import NO_AI_FIRST, LiveJob
from tests.app.live.test_stream import open_stream
from tests.app.reader_studies.conftest import open_study
from tests.app.viewer import factories

WORKLIST = "/api/worklist/events"


@pytest.fixture(autouse=True)
def quick_idle_looks(monkeypatch) -> None:
    """A worklist without a running job is looked at every 5 s; here every half second, to keep tests short."""
    monkeypatch.setattr(live_streams, "IDLE_LOOK_SECONDS", 0.5)


def _row(data: dict[str, Any], study_id: int) -> dict[str, Any] | None:
    return next((row for row in data["studies"] if row["id"] == study_id), None)


def _has(study_id: int, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    """A check of a `rows` event: it sends this study's row, with these values."""

    def check(data: dict[str, Any]) -> bool:
        row = _row(data, study_id)
        return row is not None and all(row[key] == value for key, value in fields.items())

    return check


def _new_study() -> int:
    with session_scope() as session:
        return factories.insert_study(
            session, data=factories.png_bytes(), source_format="png", rows=48, columns=64, patient_name="New^Nell"
        ).study_id


def test_rows_follow_a_job_and_new_studies_come_first(server, live_job: LiveJob, auth_headers):
    with session_scope() as session:
        done = factories.done_study(session, patient_name="Still^Sam")
        behind = factories.insert_study(
            session, data=factories.png_bytes(width=72), source_format="png", rows=48, columns=72
        )
        factories.add_job(session, behind, state=JobState.queued)  # in the live job's queue, after it
    headers = auth_headers("coordinator")
    with open_stream(server, WORKLIST, headers) as events:
        first = events.until("rows")["data"]
        assert len(first["studies"]) == len(first["ids"]) >= 2  # every row at first
        assert _has(live_job.study_id, ai_state="queued")(first) and _has(done.study_id, ai_label="abnormal")(first)
        assert first["active"] is True and events.retry == [live_streams.RETRY_MILLISECONDS]
        place = _row(first, behind.study_id)["queue_position"]

        live_job.progress(40)
        moved = events.until("rows", _has(live_job.study_id, ai_state="running", ai_progress=40))["data"]
        assert done.study_id not in [row["id"] for row in moved["studies"]]  # only what changed is sent again
        live_job.prediction()
        live_job.finish()
        finished = events.until("rows", _has(live_job.study_id, ai_state="done", ai_label="abnormal"))
        if not _has(behind.study_id, queue_position=place - 1)(finished["data"]):  # one job fewer ahead of it
            events.until("rows", _has(behind.study_id, queue_position=place - 1))
        new_id = _new_study()
        arrived = events.until("rows", _has(new_id, patient_name="New^Nell"))
        assert arrived["data"]["ids"][0] == new_id and arrived["data"]["ids"].index(live_job.study_id) > 0
        seen = arrived["id"]
        assert seen != finished["id"]

    # Reconnecting with the last event id (EventSource sends it): nothing is sent again until something changes.
    with open_stream(server, WORKLIST, {**headers, "Last-Event-ID": seen}) as events:
        with pytest.raises(queue.Empty):
            events.next(timeout=1.5)
        again = _new_study()
        event = events.until("rows", _has(again))["data"]
        assert [row["id"] for row in event["studies"]] == [again]


def test_a_reader_study_read_takes_the_label_off_mid_stream(server, app_client, coordinator, make_cases, readers):
    (case,) = make_cases(1)
    ((reader, headers),) = readers(1)
    with open_stream(server, WORKLIST, headers) as events:
        first = events.until("rows", _has(case.study_id))["data"]
        row = _row(first, case.study_id)
        assert row is not None and row["ai_label"] == "abnormal" and row["patient_name"].startswith("P-")
        open_study(app_client, coordinator, cases=[case], reader_users=[reader], **NO_AI_FIRST)
        blinded = events.until("rows", _has(case.study_id, ai_label=None))["data"]
        assert _has(case.study_id, ai_state="done", ai_referral=False)(blinded)


def test_worklist_streams_are_bounded_with_the_study_streams(server, app, live_job: LiveJob, make_user):
    _, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    streams = app.state.live_streams
    per_user = streams.per_user
    streams.per_user = 1
    try:
        with open_stream(server, WORKLIST, headers) as events:
            events.until("rows")
            for url in (WORKLIST, f"/api/studies/{live_job.study_id}/events"):
                refused = httpx.get(f"{server}{url}", headers=headers, timeout=10)
                assert refused.status_code == 503 and refused.headers["retry-after"], url
    finally:
        streams.per_user = per_user
    assert httpx.get(f"{server}{WORKLIST}", timeout=10).status_code == 401
