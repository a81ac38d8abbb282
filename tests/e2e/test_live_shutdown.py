"""`lumen serve` with live event streams open: SIGTERM still stops it within about a second. uvicorn waits for
open responses before it exits; the streams end at the signal (app/live/streams.py) instead of holding it for
the grace period."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from app.db import session_scope
from tests.app.live.conftest import queued_study
from tests.e2e.helpers import free_port, wait_for
from tests.processes import start_lumen

pytestmark = pytest.mark.slow
STREAMS = 3


def _listen(base: str, path: str, headers: dict[str, str], opened: threading.Semaphore, ended: list[float]) -> None:
    with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(10, read=60)) as client:
        try:
            with client.stream("GET", path) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("event: state"):
                        opened.release()
        except httpx.HTTPError:
            pass
    ended.append(time.monotonic())


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_with_open_streams_stops_within_seconds(auth_headers, test_output, workers: int) -> None:
    with session_scope() as session:
        live = queued_study(session)  # its job stays queued: the streams stay open
    port = free_port()
    server = start_lumen("live-serve", "serve", "--no-worker", "--port", str(port), "--workers", str(workers))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base), timeout=60, what="lumen serve to answer")
    opened, ended = threading.Semaphore(0), list[float]()
    listeners = [
        threading.Thread(
            target=_listen,
            args=(base, f"/api/studies/{live.study_id}/events", auth_headers("reader"), opened, ended),
            daemon=True,
        )
        for _ in range(STREAMS)
    ]
    for listener in listeners:
        listener.start()
    for _ in range(STREAMS):
        assert opened.acquire(timeout=30), "a stream did not open"
    began = time.monotonic()
    code = server.stop(sig=signal.SIGTERM, timeout=30)
    stopped_in = time.monotonic() - began
    for listener in listeners:
        listener.join(timeout=10)
    assert code == 0, server.tail()
    assert len(ended) == STREAMS and max(ended) - began < 3, "a stream outlived the server"
    (test_output / f"sigterm_live_streams_{workers}_processes.txt").write_text(
        f"{stopped_in:.2f} s with {STREAMS} open streams\n"
    )
    assert stopped_in < 3, f"SIGTERM took {stopped_in:.1f} s with open streams"
    assert "Cancel" not in server.tail()  # uvicorn did not have to cancel them at its grace timeout


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
