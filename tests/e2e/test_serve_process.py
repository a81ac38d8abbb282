"""`lumen serve` as a process manager runs it, on Postgres, with one API process or several: SIGTERM stops it
within a few seconds even while readers keep it busy."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from tests.e2e.helpers import free_port, wait_for
from tests.processes import start_lumen

pytestmark = pytest.mark.slow


def _hammer(base: str, headers: dict[str, str], stop: threading.Event, answers: list[int]) -> None:
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        while not stop.is_set():
            try:
                answers.append(client.get("/api/worklist").status_code)
            except httpx.HTTPError:
                answers.append(0)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_stops_the_server_within_seconds(auth_headers, test_output, workers: int) -> None:
    port = free_port()
    server = start_lumen("serve", "serve", "--no-worker", "--port", str(port), "--workers", str(workers))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base), timeout=60, what="lumen serve to answer")
    stop, answers = threading.Event(), []
    readers = [threading.Thread(target=_hammer, args=(base, auth_headers("reader"), stop, answers))
               for _ in range(20)]
    for reader in readers:
        reader.start()
    wait_for(lambda: len(answers) > 100, timeout=60, what="the readers to get going")
    began = time.monotonic()
    code = server.stop(sig=signal.SIGTERM, timeout=30)
    stopped_in = time.monotonic() - began
    stop.set()
    for reader in readers:
        reader.join(timeout=15)
    assert code == 0, server.tail()
    assert stopped_in < 8, f"SIGTERM took {stopped_in:.1f} s"
    (test_output / f"sigterm_{workers}_processes.txt").write_text(f"{stopped_in:.2f} s\n")
    assert answers.count(200) > 100 and set(answers) <= {200, 0, 503}


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
