"""The Celery apps are built by functions: importing the task modules creates no folder and opens no connection;
the worker's app (what `celery -A workers.celery_app` and `lumen worker` find) makes the embedded broker's
folders and carries the task. Each check runs in a fresh interpreter on the embedded default (no database or
broker URL) with an empty data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

NO_CONNECTIONS = r"""
import socket

attempts = []


def refuse(self, address):
    attempts.append(address)
    raise OSError("no connection may be opened at import")


socket.socket.connect = refuse
socket.create_connection = lambda address, *args, **kwargs: refuse(None, address)
"""


def _run(code: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "BROKER_URL")}
    env["LUMEN_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-c", NO_CONNECTIONS + code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_importing_the_tasks_and_the_apps_creates_nothing_and_connects_nowhere(tmp_path: Path) -> None:
    code = "import workers.tasks, workers.celery_app, app.queue, app.main, app.cli\nassert not attempts, attempts\n"

    result = _run(code, tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []


def test_the_worker_app_is_found_by_its_module_name_and_makes_the_broker_folders(tmp_path: Path) -> None:
    code = (
        "from celery.app.utils import find_app\n"
        "from app.queue import RUN_JOB_TASK\n"
        "app = find_app('workers.celery_app')\n"
        "app.loader.import_default_modules()\n"
        "assert RUN_JOB_TASK in app.tasks, sorted(app.tasks)\n"
        "assert not attempts, attempts\n"
    )

    result = _run(code, tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in (tmp_path / "broker").iterdir()) == ["control", "processed", "queue"]


def test_an_idle_worker_on_the_embedded_broker_looks_for_work_twenty_times_a_second(tmp_path: Path) -> None:
    # Celery's default, once a second, made an upload wait 0.68 s on average before a worker took it.
    code = (
        "from celery.app.utils import find_app\n"
        "app = find_app('workers.celery_app')\n"
        "with app.connection_for_read() as connection:\n"
        "    channel = connection.default_channel\n"
        "    print(type(connection.transport).__module__, connection.transport.polling_interval)\n"
    )

    result = _run(code, tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["kombu.transport.filesystem", "0.05"]
