"""The embedded default, as `make run` starts it: no DATABASE_URL or BROKER_URL, SQLite and kombu's
filesystem broker under LUMEN_DATA_DIR, and `lumen serve` starting a real worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.reading.vocabulary import ASSISTANCE_EVENTS
from tests.e2e.helpers import DEMO, FUNDUS_IN_DOMAIN, free_port, fresh_jpeg, wait_for
from tests.processes import start_lumen

pytestmark = pytest.mark.slow


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "BROKER_URL"}}
    env["LUMEN_DATA_DIR"] = str(data_dir)
    env["LUMEN_ENV"] = "development"
    return env


def _lumen(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("embedded")
    env = _embedded_env(data_dir)
    migrated = _lumen(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "active models: " in migrated.stdout and "active models: 0" not in migrated.stdout
    created = _lumen({**env, "LUMEN_PASSWORD": "embedded-pass-1"}, "create-user", "e@example.org",
                     "--role", "coordinator")
    assert created.returncode == 0, created.stderr
    port = free_port()
    server = start_lumen("embedded-serve", "serve", "--port", str(port), env=env)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(base), timeout=60, what="lumen serve to answer")
    yield base, data_dir, server
    workers = _processes_with(data_dir)
    assert workers, "lumen serve started no embedded worker"
    server.stop(timeout=60)  # SIGTERM, as a process manager stops it
    wait_for(lambda: not _processes_with(data_dir), timeout=40, what="the embedded worker to stop with the server")


def _processes_with(data_dir: Path) -> list[int]:
    """Live processes whose environment points at this data folder (the server and its worker)."""
    marker = f"LUMEN_DATA_DIR={data_dir}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            zombie = (proc / "stat").read_bytes().split()[2] == b"Z"
            if not zombie and marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/login", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_upload_is_predicted_by_the_embedded_worker(embedded_server, test_output) -> None:
    base, data_dir, _server = embedded_server
    assert (data_dir / "lumen.db").is_file()
    token = httpx.post(f"{base}/api/auth/token", data={"username": "e@example.org", "password": "embedded-pass-1"})
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    started = time.monotonic()
    upload = httpx.post(f"{base}/api/studies", headers=headers, timeout=60,
                        files=[("files", ("fundus.jpg", fresh_jpeg(FUNDUS_IN_DOMAIN), "image/jpeg"))])
    assert upload.status_code == 201, upload.text
    [job_id] = upload.json()["job_ids"]
    job = wait_for(
        lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(
            httpx.get(f"{base}/api/jobs/{job_id}", headers=headers).json()),
        timeout=180, what="the embedded worker to finish the job",
    )
    elapsed = time.monotonic() - started
    assert (job["state"], job["error"]) == ("done", "")
    instance_id = upload.json()["instances"][0]["id"]
    prediction = httpx.get(f"{base}/api/instances/{instance_id}/prediction", headers=headers).json()
    assert "gradcam" in {h["method"] for h in prediction["heatmaps"]}
    assert all("deletion_auc" in h["scores"] for h in prediction["heatmaps"])
    (test_output / "embedded_timing.txt").write_text(f"upload to done (embedded, SQLite): {elapsed:.2f} s\n")


def test_the_terminal_ends_with_the_address_and_the_sign_in(embedded_server) -> None:
    base, data_dir, server = embedded_server
    printed = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    assert printed[-2:] == [
        f"Lumen is running at {base}/",
        "Sign in with your account (lumen create-user EMAIL --role admin adds one)",  # no demo user here
    ]
    # The server's and the worker's logs went to files, not to the terminal.
    assert "Uvicorn running" not in "\n".join(printed)
    assert "Uvicorn running" in (data_dir / "logs" / "server.log").read_text()
    assert "celery@" in (data_dir / "logs" / "worker.log").read_text()


def test_concurrent_writers_on_sqlite_never_get_an_error(embedded_server) -> None:
    """Three readers saving drafts, logging assistance and submitting while a coordinator uploads and the worker
    stores its results: every write answered 2xx (SQLite's one writer at a time, taken in turn)."""
    base, data_dir, _server = embedded_server
    env = _embedded_env(data_dir)
    readers = []
    for n in range(3):
        email = f"writer{n}-{uuid.uuid4().hex[:6]}@example.org"
        created = _lumen({**env, "LUMEN_PASSWORD": "embedded-pass-1"}, "create-user", email, "--role", "reader")
        assert created.returncode == 0, created.stderr
        readers.append(_bearer(base, email))
    coordinator = _bearer(base, "e@example.org")
    first = httpx.post(f"{base}/api/studies", headers=coordinator, timeout=60,
                       files=[("files", ("fundus.jpg", fresh_jpeg(next(DEMO.glob("*.jpg"))), "image/jpeg"))])
    assert first.status_code == 201, first.text
    study_id = first.json()["id"]
    statuses: list[tuple[str, int]] = []
    until = time.monotonic() + 8

    def read_and_log(headers: dict[str, str]) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            while time.monotonic() < until:
                client_id = uuid.uuid4()
                body = {"study_id": study_id, "answers": {"dr_grade": 1, "dme": False, "confidence": 3}}
                statuses.append(("draft", client.put(f"/api/reads/{client_id}", json=body).status_code))
                events = [{"event": ASSISTANCE_EVENTS[0], "study_id": study_id}] * 5
                statuses.append(("events", client.post("/api/assistance-events", json={"events": events}).status_code))
                statuses.append(("submit", client.post(f"/api/reads/{client_id}/submit", json=body).status_code))

    def upload() -> None:
        photo = next(DEMO.glob("*.jpg"))
        with httpx.Client(base_url=base, headers=coordinator, timeout=60) as client:
            while time.monotonic() < until:
                files = [("files", ("fundus.jpg", fresh_jpeg(photo, max_side=256), "image/jpeg"))]
                statuses.append(("upload", client.post("/api/studies", files=files).status_code))

    threads = [threading.Thread(target=read_and_log, args=(h,)) for h in readers] + [threading.Thread(target=upload)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    failed = [(what, code) for what, code in statuses if not 200 <= code < 300]
    assert len(statuses) > 40 and failed == [], failed


def _bearer(base: str, email: str) -> dict[str, str]:
    token = httpx.post(f"{base}/api/auth/token", data={"username": email, "password": "embedded-pass-1"})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}
