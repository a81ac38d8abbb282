"""When the database is out of reach or out of connections: 503 with Retry-After at once, never a hang, and the
server keeps answering what needs no database. Real uvicorn, real Postgres."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db import get_engine
from app.health import monitor
from app.main import create_app
from tests.app.auth.helpers import PASSWORD, sign_in
from tests.e2e.helpers import free_port, running_server
from tests.settings import settings_env

TIGHT_POOL = {"LUMEN_DB_POOL_SIZE": "1", "LUMEN_DB_MAX_OVERFLOW": "0", "LUMEN_DB_POOL_TIMEOUT_SECONDS": "1"}


def _measured(folder: Path, **seconds: float) -> None:
    """Keep what a test measured in test-output/api_faults.json (docs/faults.md quotes it)."""
    path = folder / "api_faults.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**kept, **{k: round(v, 3) for k, v in seconds.items()}}, indent=2))


def _timed_get(url: str, headers: dict[str, str] | None = None) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = httpx.get(url, headers=headers or {}, timeout=30)
    return response, time.monotonic() - began


def test_no_free_connection_is_a_503_in_time_and_the_event_loop_stays_free(auth_headers, test_output) -> None:
    headers = auth_headers("reader")
    with settings_env(TIGHT_POOL), running_server(create_app(run_sweeper=False)) as base:
        assert httpx.get(f"{base}/api/worklist", headers=headers).status_code == 200
        held = get_engine().connect()  # the pool's only connection, kept busy by "another request"
        held.execute(text("SELECT 1"))
        try:
            with ThreadPoolExecutor(8) as pool:
                waiting = [pool.submit(_timed_get, f"{base}/api/worklist", headers) for _ in range(8)]
                # While eight requests wait for a connection, what needs no database answers at once: no
                # database call blocks the event loop.
                liveness = [_timed_get(f"{base}/healthz")[1] for _ in range(10)]
                answers = [future.result() for future in waiting]
        finally:
            held.close()
        # The median, not the max: on a loaded machine one probe may take half a second all the same, while a
        # blocked loop would hold every probe behind the waiting requests' 1 s pool timeouts, one after another.
        assert statistics.median(liveness) < 0.5, liveness
        assert {response.status_code for response, _ in answers} == {503}
        assert all(response.headers["retry-after"] == "5" for response, _ in answers)
        assert "no database connection was free" in answers[0][0].json()["detail"]
        assert max(seconds for _, seconds in answers) < 6  # the 1 s pool timeout, a few in turn: no hang
        _measured(test_output, pool_exhausted_503_s=max(s for _, s in answers), healthz_meanwhile_s=max(liveness))
        # The connection is back: the server serves again, nothing to restart.
        assert httpx.get(f"{base}/api/worklist", headers=headers).status_code == 200


def test_a_database_out_of_reach_is_a_503_json_for_the_api_and_a_page_for_browsers(auth_headers, test_output) -> None:
    headers = auth_headers("reader")
    dead = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"}
    with settings_env(dead), running_server(create_app(run_sweeper=False)) as base:
        api, seconds = _timed_get(f"{base}/api/worklist", headers)
        page = httpx.get(f"{base}/", headers={"Accept": "text/html", "Cookie": "lumen_session=x"}, timeout=30)
        liveness = httpx.get(f"{base}/healthz")
    assert seconds < 5
    _measured(test_output, database_down_503_s=seconds)
    assert (api.status_code, api.headers["retry-after"]) == (503, "5")
    assert api.json() == {"detail": "Lumen cannot reach its database; try again in a few seconds"}
    assert (page.status_code, page.headers["retry-after"]) == (503, "5")
    assert "text/html" in page.headers["content-type"]
    assert "Lumen cannot reach its database" in page.text and 'http-equiv="refresh"' in page.text
    assert liveness.status_code == 200


def test_pages_carry_a_banner_while_the_broker_is_out(make_user) -> None:
    user, _ = make_user("reader", password=PASSWORD)
    with TestClient(create_app(run_sweeper=False)) as client:
        sign_in(client, user.email)
        with settings_env({"BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}):
            client.portal.call(monitor.check_once, client.app)
        page = client.get("/")
        assert page.status_code == 200
        assert "cannot reach its job queue" in page.text and 'class="outage"' in page.text
        client.portal.call(monitor.check_once, client.app)  # the session's own broker again: the banner goes
        assert client.app.state.outage is None
        assert 'class="outage"' not in client.get("/").text


def test_past_the_concurrency_limit_requests_wait_their_turn_then_get_a_503(auth_headers) -> None:
    headers = auth_headers("reader")
    crowded = {**TIGHT_POOL, "LUMEN_MAX_CONCURRENT_REQUESTS": "1", "LUMEN_REQUEST_QUEUE_SECONDS": "0.3"}
    with settings_env(crowded), running_server(create_app(run_sweeper=False)) as base:
        held = get_engine().connect()  # the one request let in waits for the pool's only connection (1 s)
        held.execute(text("SELECT 1"))
        try:
            with ThreadPoolExecutor(4) as pool:
                let_in = pool.submit(_timed_get, f"{base}/api/worklist", headers)
                time.sleep(0.1)
                queued = [pool.submit(_timed_get, f"{base}/api/worklist", headers) for _ in range(2)]
                page = pool.submit(lambda: httpx.get(f"{base}/", headers={"Accept": "text/html", **headers}))
                liveness = _timed_get(f"{base}/healthz")[1]
                turned_away = [future.result() for future in queued]
                page_response = page.result()
                let_in.result()
        finally:
            held.close()
        assert liveness < 0.5
        for response, seconds in turned_away:
            assert (response.status_code, response.headers["retry-after"]) == (503, "5")
            assert "too many requests at once" in response.json()["detail"]
            assert seconds < 1.0  # the 0.3 s queue time, not the 1 s pool wait of the request let in
        assert page_response.status_code == 503 and "too many requests at once" in page_response.text
        assert httpx.get(f"{base}/api/worklist", headers=headers).status_code == 200
