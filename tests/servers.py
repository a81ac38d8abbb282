"""Private Postgres and Redis servers for fault tests, on free loopback ports, each in a folder of its own.

The shared servers on 5432 and 6379 serve every test session on the machine and are never stopped; a fault
test restarts, stops or empties these instead. Postgres runs as the `postgres` OS user when the tests run as
root (it refuses root); its log is test-output/logs/postgres-<port>.log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from tests.e2e.helpers import free_port, wait_for
from tests.processes import LOG_DIR, LoggedProcess, start_process

PG_BIN = Path(os.environ.get("LUMEN_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PrivatePostgres:
    """A Postgres cluster of its own: trust auth, 127.0.0.1 only, fsync off (its data is thrown away)."""

    folder: Path
    port: int
    log_path: Path

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.log_path), "-w",
                   "-t", "60", "-o", options, *args]
        subprocess.run(_as_postgres(command), check=True, capture_output=True, timeout=90)

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut, as when a database host or container restarts."""
        self._ctl("-m", "fast", "stop")

    def restart(self, *, down_seconds: float = 0.0) -> float:
        """Stop, stay down `down_seconds`, start again; the seconds it was not answering."""
        stopped = time.monotonic()
        self.stop()
        time.sleep(down_seconds)
        self.start()
        return time.monotonic() - stopped

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PrivatePostgres:
    # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="lumen-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    initdb = [str(PG_BIN / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync",
              "-E", "UTF8"]
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True, timeout=120)
    log_path = LOG_DIR / f"postgres-{port}.log"
    log_path.touch()
    if os.geteuid() == 0:
        shutil.chown(log_path, user="postgres")
    server = PrivatePostgres(folder=folder, port=port, log_path=log_path)
    server.start()
    return server


@dataclass
class PrivateRedis:
    """A Redis of its own that keeps nothing on disk: a restart empties it, as a Redis without persistence."""

    port: int
    process: LoggedProcess

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def restart(self) -> float:
        """Stop (nothing saved) and start again, empty; the seconds it was not answering."""
        stopped = time.monotonic()
        self.process.stop()
        self.process = _redis_process(self.port)
        return time.monotonic() - stopped

    def stop(self) -> None:
        self.process.stop()


def _redis_process(port: int) -> LoggedProcess:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = start_process(f"redis-{port}", argv)
    probe = redis.Redis(port=port, socket_timeout=1)
    wait_for(lambda: _answers(probe), timeout=20, what=f"redis-server on port {port}", interval=0.05)
    return process


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def start_redis() -> PrivateRedis:
    port = free_port()
    return PrivateRedis(port=port, process=_redis_process(port))
