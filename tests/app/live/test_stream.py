"""The event stream over HTTP, read by a real client from the app under uvicorn: an event for each commit of a
running job, nothing again after a reconnect, the reader-study blinding mid-stream, the limits, and no slot of
admission control held while it is open."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from app.config import get_settings
from app.live import streams as live_streams
from app.main import create_app
from app.tables import JobState
from tests.app.live.conftest import NO_AI_FIRST, SCORES, LiveJob
from tests.app.reader_studies.conftest import open_study
from tests.app.viewer import factories
from tests.e2e.helpers import running_server

END = object()


class Stream:
    """An open event stream, read in a thread into a queue of events (dicts: event, id, data)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: queue.Queue[Any] = queue.Queue()
        self.retry: list[int] = []
        self.comments = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for line in self.response.iter_lines():
                if not line:
                    if "event" in event:
                        self.events.put(event)
                    event = {}
                elif line.startswith(":"):
                    self.comments += 1
                elif line.startswith("retry: "):
                    self.retry.append(int(line[7:]))
                elif line.startswith(("event: ", "id: ")):
                    key, _, value = line.partition(": ")
                    event[key] = value
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
        except httpx.HTTPError:
            pass
        self.events.put(END)

    def next(self, timeout: float = 10) -> Any:
        return self.events.get(timeout=timeout)

    def until(self, name: str, check=lambda data: True, timeout: float = 10) -> dict[str, Any]:
        """The first event of this name whose data passes `check`; fails on the stream's end or a timeout."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(timeout=max(0.01, deadline - time.monotonic()))
            assert event is not END, f"the stream ended before a {name} event"
            if event["event"] == name and check(event["data"]):
                return event


@contextmanager
def stream(server: str, study_id: int, headers: dict[str, str]) -> Iterator[Stream]:
    with open_stream(server, f"/api/studies/{study_id}/events", headers) as events:
        yield events


@contextmanager
def open_stream(server: str, url: str, headers: dict[str, str]) -> Iterator[Stream]:
    """The event stream at `url`, read as a browser reads it, closed as a browser closing its tab closes it."""
    with (
        httpx.Client(base_url=server, timeout=httpx.Timeout(10, read=30)) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        # Closing a socket another thread reads from does not end the connection on Linux until that read
        # returns; a shutdown does, at once, as a browser closing its tab.
        sock = response.extensions["network_stream"].get_extra_info("socket")
        try:
            yield Stream(response)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _heatmaps(data: dict[str, Any]) -> list[tuple[str, dict]]:
    assistance = data["instances"][0]["assistance"]
    return [(h["method"], h["scores"]) for h in assistance["heatmaps"]] if assistance else []


def test_each_commit_of_a_running_job_is_an_event(server, live_job: LiveJob, auth_headers, test_output):
    headers = auth_headers("reader")
    latencies = []
    with stream(server, live_job.study_id, headers) as events:
        first = events.until("results")
        assert first["data"]["instances"] == [{"id": live_job.instance_id, "assistance": None, "refusal": None}]
        assert events.until("state")["data"]["ai_state"] == "queued" and events.retry == [2000]

        def step(commit, name, check):
            began = time.monotonic()
            result = commit()
            event = events.until(name, check)
            latencies.append(time.monotonic() - began)
            return result, event

        step(lambda: live_job.progress(40), "state", lambda d: (d["ai_state"], d["ai_progress"]) == ("running", 40))
        prediction_id, predicted = step(live_job.prediction, "results", lambda d: d["instances"][0]["assistance"])
        assert (
            predicted["data"]["instances"][0]["assistance"]["label"] == "abnormal"
            and _heatmaps(predicted["data"]) == []
        )
        gradcam, mapped = step(lambda: live_job.heatmap(prediction_id, "gradcam"), "results", _heatmaps)
        assert _heatmaps(mapped["data"]) == [("gradcam", {})]
        _, scored = step(lambda: live_job.score(gradcam), "results", lambda d: _heatmaps(d)[0][1])
        assert _heatmaps(scored["data"]) == [("gradcam", SCORES)]
        step(live_job.finish, "state", lambda d: d["ai_state"] == "done")
        end = events.next()
        assert end["event"] == "end" and events.next() is END  # nothing more will come: the server ends it
    (test_output / "live_event_latency.txt").write_text(
        "seconds from commit to event: " + " ".join(f"{value:.2f}" for value in latencies) + "\n"
    )
    assert max(latencies) < 3  # one look a second


def test_a_reconnect_gets_only_what_it_has_not_seen(server, live_job: LiveJob, auth_headers):
    headers = auth_headers("reader")
    live_job.progress(10)
    with stream(server, live_job.study_id, headers) as events:
        seen = events.until("state")["id"]
    with stream(server, live_job.study_id, {**headers, "Last-Event-ID": seen}) as events:
        time.sleep(2.5)  # two looks or more: nothing changed, nothing sent
        assert events.events.empty()
        live_job.progress(20)
        event = events.next()
        assert (event["event"], event["data"]["ai_progress"]) == ("state", 20)  # the state only: results unchanged
        assert event["id"].split(".")[1] == seen.split(".")[1]


def test_an_idle_stream_keeps_alive_and_ends_at_its_lifetime(server, live_job: LiveJob, auth_headers, monkeypatch):
    monkeypatch.setattr(live_streams, "HEARTBEAT_SECONDS", 1.0)
    monkeypatch.setattr(live_streams, "MAX_LIFETIME_SECONDS", 3.5)
    with stream(server, live_job.study_id, auth_headers("reader")) as events:
        events.until("state")
        began = time.monotonic()
        assert events.next() is END  # the job stays queued: no event, and no `end` either
        lasted = time.monotonic() - began
    assert events.comments >= 2 and 2.5 < lasted < 6


def test_blinded_mid_stream_the_ai_stops(server, app_client, coordinator, make_cases, readers, db_session):
    (case,) = make_cases(1)
    stored = factories.StoredStudy(case.study_id, case.instance_id)
    factories.add_job(db_session, stored, state=JobState.running, progress=5)  # an extra job still runs
    db_session.commit()
    ((reader, headers),) = readers(1)
    with stream(server, case.study_id, headers) as events:
        assert events.until("results")["data"]["instances"][0]["assistance"]["label"] == "abnormal"
        open_study(app_client, coordinator, cases=[case], reader_users=[reader], **NO_AI_FIRST)
        refused = events.until("refused")
        assert refused["data"]["status"] == 403 and "reader study" in refused["data"]["detail"]
        assert events.next() is END
    answer = httpx.get(f"{server}/api/studies/{case.study_id}/events", headers=headers, timeout=10)
    assert answer.status_code == 403 and "abnormal" not in answer.text


def test_streams_are_bounded(server, app, live_job: LiveJob, make_user):
    _, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    streams = app.state.live_streams
    limit, per_user = streams.limit, streams.per_user
    streams.per_user = 1
    try:
        with stream(server, live_job.study_id, headers) as events:
            events.until("state")
            refused = httpx.get(f"{server}/api/studies/{live_job.study_id}/events", headers=headers, timeout=10)
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert "you have 1 live streams open already" in refused.json()["detail"]
            streams.limit = 1
            other = httpx.get(
                f"{server}/api/studies/{live_job.study_id}/events",
                timeout=10,
                headers={"Authorization": f"Bearer {make_user('reader')[1]}"},
            )
            assert other.status_code == 503 and "live streams already" in other.json()["detail"]
    finally:
        streams.limit, streams.per_user = limit, per_user
    deadline = time.monotonic() + 5
    while streams.open_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert streams.open_count() == 0  # the closed stream gave its place back


@pytest.fixture
def one_request_at_a_time(monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("LUMEN_MAX_CONCURRENT_REQUESTS", "1")
    monkeypatch.setenv("LUMEN_REQUEST_QUEUE_SECONDS", "0.5")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_open_streams_hold_no_admission_slot(one_request_at_a_time, live_job: LiveJob, auth_headers):
    headers = auth_headers("reader")
    with (
        running_server(create_app(run_sweeper=False)) as base,
        stream(base, live_job.study_id, headers) as first,
        stream(base, live_job.study_id, headers) as second,
    ):
        first.until("state")
        second.until("state")
        answer = httpx.get(f"{base}/api/worklist/{live_job.study_id}", headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
