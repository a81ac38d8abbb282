"""`lumen worker-ping`, the healthcheck of a worker container, against a real worker on Redis."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT
from tests.processes import LoggedProcess, start_lumen

pytestmark = pytest.mark.slow

NAME = f"ping-{secrets.token_hex(4)}@%h"


def _ping(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "worker-ping", *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def worker() -> Iterator[LoggedProcess]:
    """A real worker with a name of its own, on a queue no job is sent to."""
    process = start_lumen("ping-worker", "worker", "--queues", "ping-test", "--name", NAME)
    yield process
    assert process.stop() == 0, f"the worker did not stop cleanly; see {process.log_path}"


def test_the_named_worker_answers(worker: LoggedProcess) -> None:
    deadline = time.monotonic() + 90
    while True:
        result = _ping("--name", NAME, "--timeout", "3")
        if result.returncode == 0 or time.monotonic() > deadline or worker.process.poll() is not None:
            break
        time.sleep(1)

    assert result.returncode == 0, result.stderr + worker.tail()


def test_no_worker_of_that_name_exits_1(worker: LoggedProcess) -> None:
    started = time.monotonic()

    result = _ping("--name", f"absent-{secrets.token_hex(4)}@%h", "--timeout", "1")

    assert result.returncode == 1
    assert "no answer from absent-" in result.stderr
    assert time.monotonic() - started < 30


def test_a_broker_that_is_down_exits_1() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, BROKER_URL=f"redis://127.0.0.1:{port}/0")

    result = _ping("--timeout", "1", env=env)

    assert result.returncode == 1
    assert "broker not reachable" in result.stderr
