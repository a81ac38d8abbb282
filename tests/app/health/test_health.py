"""/healthz and /readyz on the real Postgres and Redis, and readiness against a closed port and a silent one."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from app.config import Settings, get_settings
from app.db import reset_engine
from app.health import service as health_service


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung database or broker."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def _settings(**changes: object) -> Settings:
    return get_settings().model_copy(update=changes)


def test_healthz_is_ok(app_client) -> None:
    response = app_client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_on_postgres_and_redis(app_client) -> None:
    response = app_client.get("/readyz")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert {name: c["status"] for name, c in body["components"].items()} == {"database": "ok", "broker": "ok"}
    assert "Retry-After" not in response.headers


def test_a_closed_broker_port_is_named_and_the_database_still_ok() -> None:
    readiness = health_service.readiness(settings=_settings(broker_url=f"redis://127.0.0.1:{_closed_port()}/0"))

    assert readiness.status == "down"
    assert readiness.components["broker"].status == "down"
    assert readiness.components["broker"].error == "OperationalError"
    assert readiness.components["database"].status == "ok"


def test_a_closed_database_port_is_named() -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/lumen"

    readiness = health_service.readiness(settings=_settings(database_url=url))

    assert readiness.components["database"].status == "down"
    assert readiness.components["broker"].status == "ok"


def test_readiness_answers_within_its_timeout_when_both_hang(silent_port: int) -> None:
    settings = _settings(
        database_url=f"postgresql://postgres@127.0.0.1:{silent_port}/lumen",
        broker_url=f"redis://127.0.0.1:{silent_port}/0",
    )
    started = time.monotonic()

    readiness = health_service.readiness(settings=settings, timeout=1.0)

    assert time.monotonic() - started < 1.5
    assert readiness.components["database"].status == "down"
    assert readiness.components["database"].error == "no answer within 1 s"
    assert readiness.components["broker"].status == "down"


def test_the_embedded_broker_is_ready_when_its_folder_is_usable(tmp_path) -> None:
    settings = _settings(broker_url=None, data_dir=tmp_path)

    readiness = health_service.readiness(settings=settings)

    assert readiness.components["broker"].status == "ok"
    assert settings.broker_folder.is_dir()


def test_readyz_is_503_with_retry_after_and_healthz_stays_ok(app_client, monkeypatch) -> None:
    monkeypatch.setenv("BROKER_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    get_settings.cache_clear()
    try:
        ready = app_client.get("/readyz")
        live = app_client.get("/healthz")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        reset_engine()

    assert ready.status_code == 503
    assert ready.headers["Retry-After"] == "5"
    body = ready.json()
    assert body["status"] == "down"
    assert body["components"]["broker"]["status"] == "down"
    assert body["components"]["database"]["status"] == "ok"
    assert live.status_code == 200
