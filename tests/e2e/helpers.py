"""Helpers for end-to-end tests: fresh copies of real demo files, free ports, waiting for a condition, signing a
browser page in."""

from __future__ import annotations

import io
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pydicom
import uvicorn
from PIL import Image
from pydicom.uid import generate_uid

DEMO = Path(__file__).resolve().parents[2] / "demo"
# A fundus photograph inside the input domain of the DR and IDRiD models (data/idrid, CC BY 4.0), for tests that
# need a model's prediction: their gates refuse the demo's JPEG, IDRiD_02 (docs/models.md).
FUNDUS_IN_DOMAIN = Path(__file__).resolve().parents[2] / "data" / "idrid" / "IDRiD_05.jpg"
T = TypeVar("T")


def sign_in(page, server: str, email: str) -> None:
    """Sign the Playwright page in through the login form as `email` (make_user's password), landing on the
    worklist."""
    from tests.app.auth.helpers import PASSWORD

    page.goto(f"{server}/login")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{server}/")


def fresh_dicom(path: Path) -> bytes:
    """The real file with new Study/Series/SOP UIDs (pixel data untouched), so dedupe does not apply."""
    dataset = pydicom.dcmread(path)
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def fresh_jpeg(path: Path, *, max_side: int = 1024) -> bytes:
    """The real photograph re-encoded (smaller) with a random JPEG comment, so that its sha256 is new each call
    (photographs are de-duplicated by content)."""
    image = Image.open(path).convert("RGB")
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, comment=secrets.token_hex(8).encode())
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def running_server(app: object) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a background thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
