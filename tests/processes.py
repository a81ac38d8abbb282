"""Processes that tests start (a `lumen worker`, `lumen serve`, an S3 server), each writing to a log file of its own.

A failing test gets the tail of the log of every process that was running while it ran (the hook in
tests/conftest.py), so a worker that crashed or never picked a job up says why in the test report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG_DIR = Path(__file__).resolve().parent.parent / "test-output" / "logs"
TAIL_BYTES = 20_000


@dataclass
class LoggedProcess:
    """A child process whose stdout and stderr go to `log_path`."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.time)
    stopped_at: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def running_since(self, moment: float) -> bool:
        """True if the process was alive at some point after `moment`."""
        return self.stopped_at is None or self.stopped_at >= moment

    def tail(self) -> str:
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        cut = len(data) > TAIL_BYTES
        text = data[-TAIL_BYTES:].decode("utf-8", "replace")
        return f"[... {len(data) - TAIL_BYTES} bytes before ...]\n{text}" if cut else text

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig`, wait up to `timeout` s, then kill; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.stopped_at = time.time()
        return self.process.returncode


_STARTED: list[LoggedProcess] = []


def start_lumen(name: str, *args: str, env: dict[str, str] | None = None) -> LoggedProcess:
    """Start `lumen ARGS...` (as `python -m app.cli`) with its output in test-output/logs/<name>-<pid>.log."""
    return start_process(name, [sys.executable, "-m", "app.cli", *args], env=env)


def start_process(name: str, argv: list[str], *, env: dict[str, str] | None = None) -> LoggedProcess:
    """Start any program (a server tests need) with its output in test-output/logs/<name>-<pid>.log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}-{os.getpid()}-{len(_STARTED)}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, env=dict(os.environ if env is None else env), stdout=log, stderr=subprocess.STDOUT
        )
    started = LoggedProcess(name=name, process=process, log_path=log_path)
    _STARTED.append(started)
    return started


def running_since(moment: float) -> list[LoggedProcess]:
    """The processes started by tests that were alive at some point after `moment`."""
    return [started for started in _STARTED if started.running_since(moment)]
