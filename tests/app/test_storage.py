"""The blob stores: one contract for the local folder and an S3 bucket on a real server (`rclone serve s3`),
what only S3 has (prefix, credentials, timeouts, `lumen migrate` creating the bucket), and the app on S3."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from app import cli
from app.config import Settings, get_settings
from app.db import session_scope
from app.storage import BlobNotFound, BlobStore, BlobStoreError, LocalBlobStore, get_blob_store
from app.storage.s3 import MAX_ATTEMPTS, S3BlobStore
from app.tables import Instance
from tests.e2e.helpers import free_port, fresh_dicom
from tests.s3 import S3Server, new_bucket_name
from tests.settings import settings_env

DICOM = Path(__file__).resolve().parents[1] / "fixtures" / "dicom"
ESCAPING_KEYS = ["../x", "ab/../../x", "/etc/passwd", "ab//cd", "ab/", ".hidden", "ab/./cd", "ab\\..\\x", ""]


def _blob(size: int = 1000) -> tuple[str, bytes]:
    data = os.urandom(size)
    return hashlib.sha256(data).hexdigest(), data


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[BlobStore]:
    """The store get_blob_store() gives under the session's settings (local) or S3 settings (a fresh bucket)."""
    if request.param == "local":
        yield get_blob_store()
        return
    server: S3Server = request.getfixturevalue("s3_server")
    with settings_env(server.env(bucket=new_bucket_name(), prefix="lumen/blobs")):
        s3_store = get_blob_store()
        s3_store.prepare()
        yield s3_store


@pytest.fixture
def s3_timings(test_output: Path) -> Iterator[dict[str, float]]:
    """Seconds measured by a test, kept in test-output/s3_timings.json (merged with other tests')."""
    path = test_output / "s3_timings.json"
    timings: dict[str, float] = {}
    yield timings
    if timings:
        earlier = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps(earlier | timings, indent=2))


# The contract, for both stores.


def test_settings_select_the_store(store: BlobStore) -> None:
    expected = S3BlobStore if get_settings().s3_bucket else LocalBlobStore
    assert type(store) is expected


def test_put_get_exists_delete(store: BlobStore) -> None:
    sha256, data = _blob()
    key = store.put(sha256, data)
    assert key == store.key_for(sha256) == f"{sha256[:2]}/{sha256}"
    assert store.exists(key)
    assert store.get(key) == data
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(BlobNotFound):
        store.get(key)
    store.delete(key)  # deleting what is not there is no error


def test_put_keeps_the_blob_already_there(store: BlobStore) -> None:
    sha256, data = _blob()
    first = store.put(sha256, data)
    # Content-addressed: the same sha256 is the same content, so a second put writes nothing.
    assert store.put(sha256, b"something else") == first
    assert store.get(first) == data


def test_a_missing_key_is_blob_not_found(store: BlobStore) -> None:
    key = store.key_for(hashlib.sha256(b"never stored").hexdigest())
    assert not store.exists(key)
    with pytest.raises(BlobNotFound) as caught:
        store.get(key)
    assert isinstance(caught.value, KeyError)
    assert key in str(caught.value)


def test_a_20_mb_blob_round_trips_byte_exact(store: BlobStore) -> None:
    sha256, data = _blob(20 * 2**20)  # over the 8 MiB multipart threshold of the S3 store
    key = store.put(sha256, data)
    back = store.get(key)
    assert len(back) == len(data) and hashlib.sha256(back).hexdigest() == sha256
    store.delete(key)


@pytest.mark.parametrize("key", ESCAPING_KEYS)
def test_keys_cannot_escape_the_folder_or_prefix(store: BlobStore, key: str) -> None:
    for use in (store.get, store.exists, store.delete):
        with pytest.raises(ValueError, match="escapes"):
            use(key)
    with pytest.raises(ValueError, match="escapes"):
        store.put("../../../tmp/x", b"data")


# Only S3.


def test_objects_are_under_the_prefix_in_the_bucket(s3_server: S3Server) -> None:
    bucket = new_bucket_name()
    with settings_env(s3_server.env(bucket=bucket, prefix="/site-a/blobs/")):
        store = get_blob_store()
        store.prepare()
        blobs = [_blob() for _ in range(3)]
        keys = [store.put(sha256, data) for sha256, data in blobs]
    assert s3_server.object_names(bucket) == sorted(f"site-a/blobs/{key}" for key in keys)
    # rclone keeps an object as a file: the bytes really went through the server to its folder.
    for key, (_, data) in zip(keys, blobs, strict=True):
        assert (s3_server.root / bucket / "site-a" / "blobs" / key).read_bytes() == data


def test_migrate_creates_the_bucket_then_finds_it(s3_server: S3Server, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = new_bucket_name()
    with settings_env(s3_server.env(bucket=bucket)):
        assert cli.main(["migrate"]) == 0
        first = capsys.readouterr().out
        assert cli.main(["migrate"]) == 0
        second = capsys.readouterr().out
    assert f"bucket {bucket!r} at {s3_server.endpoint_url}: created the bucket" in first
    assert f"bucket {bucket!r} at {s3_server.endpoint_url}: reachable" in second
    assert bucket in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]


def test_wrong_credentials_are_a_clear_error(s3_server: S3Server, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = new_bucket_name()
    s3_server.client().create_bucket(Bucket=bucket)
    sha256, data = _blob()
    with settings_env(s3_server.env(bucket=bucket, LUMEN_S3_SECRET_ACCESS_KEY="not-the-secret")):
        store = get_blob_store()
        for attempt in (lambda: store.put(sha256, data), lambda: store.get(store.key_for(sha256))):
            with pytest.raises(BlobStoreError, match="access denied .*LUMEN_S3_SECRET_ACCESS_KEY"):
                attempt()
        assert cli.main(["migrate"]) == 2
    assert "lumen migrate: S3 bucket" in capsys.readouterr().err
    assert s3_server.object_names(bucket) == []


def test_a_missing_bucket_says_so(s3_server: S3Server) -> None:
    with (
        settings_env(s3_server.env(bucket=new_bucket_name())),
        pytest.raises(BlobStoreError, match="does not exist .*lumen migrate"),
    ):
        get_blob_store().put(*_blob())


def _unreachable_env(endpoint: str, timeout: float) -> dict[str, str]:
    return {
        "LUMEN_S3_BUCKET": "lumen",
        "LUMEN_S3_ENDPOINT_URL": endpoint,
        "LUMEN_S3_ACCESS_KEY_ID": "lumen-test",
        "LUMEN_S3_SECRET_ACCESS_KEY": "lumen-test-secret",
        "LUMEN_S3_TIMEOUT_SECONDS": str(timeout),
    }


def test_a_closed_port_fails_fast(s3_timings: dict[str, float]) -> None:
    timeout = 2.0
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens on it
    with settings_env(_unreachable_env(endpoint, timeout)):
        started = time.monotonic()
        with pytest.raises(BlobStoreError, match="Could not connect"):
            get_blob_store().get("ab/abcdef")
        elapsed = time.monotonic() - started
    s3_timings["closed_port_error_s"] = round(elapsed, 2)
    # Each try is refused at once; only the backoff between the tries (under 1 + 2 s) adds up.
    assert elapsed < MAX_ATTEMPTS * timeout


def test_a_server_that_never_answers_times_out(s3_timings: dict[str, float]) -> None:
    timeout = 1.0
    with socket.socket() as silent:
        # The kernel completes the connections (backlog) but nobody reads or answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with settings_env(_unreachable_env(endpoint, timeout)):
            started = time.monotonic()
            with pytest.raises(BlobStoreError, match="timeout"):
                get_blob_store().exists("ab/abcdef")
            elapsed = time.monotonic() - started
    s3_timings["silent_server_timeout_1s_error_s"] = round(elapsed, 2)
    # Every try waits out its read timeout; backoff between tries is under 1 + 2 s.
    assert MAX_ATTEMPTS * timeout <= elapsed < MAX_ATTEMPTS * timeout + 3 + 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LUMEN_S3_ENDPOINT_URL": "http://127.0.0.1:9000"}, "LUMEN_S3_ENDPOINT_URL set without LUMEN_S3_BUCKET"),
        ({"LUMEN_S3_PREFIX": "blobs"}, "LUMEN_S3_PREFIX set without LUMEN_S3_BUCKET"),
        ({"LUMEN_S3_BUCKET": "Lumen_Blobs"}, "is not a bucket name"),
        ({"LUMEN_S3_BUCKET": "lumen", "LUMEN_S3_ENDPOINT_URL": "127.0.0.1:9000"}, "must start with http"),
        ({"LUMEN_S3_BUCKET": "lumen", "LUMEN_S3_ACCESS_KEY_ID": "key"}, "set both LUMEN_S3_ACCESS_KEY_ID"),
        ({"LUMEN_S3_BUCKET": "lumen", "LUMEN_S3_PREFIX": "a/../b"}, "LUMEN_S3_PREFIX 'a/../b'"),
        ({"LUMEN_S3_BUCKET": "lumen", "LUMEN_S3_TIMEOUT_SECONDS": "0"}, "LUMEN_S3_TIMEOUT_SECONDS"),
    ],
)
def test_settings_refuse_an_incomplete_s3_configuration(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        Settings()


def test_empty_s3_settings_mean_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMEN_S3_BUCKET", "")
    monkeypatch.setenv("LUMEN_S3_ENDPOINT_URL", " ")
    assert Settings().s3_bucket is None


# The app on S3.


def test_an_upload_goes_to_the_bucket_and_the_viewer_reads_it_back(
    s3_server: S3Server, app_client, auth_headers
) -> None:
    bucket = new_bucket_name()
    headers = auth_headers("admin")
    local_blobs = get_settings().blob_dir
    before = sorted(local_blobs.rglob("*")) if local_blobs.exists() else []
    data = fresh_dicom(DICOM / "RG1_J2KI.dcm")
    sha256 = hashlib.sha256(data).hexdigest()
    with settings_env(s3_server.env(bucket=bucket, prefix="lumen")):
        get_blob_store().prepare()
        upload = app_client.post(
            "/api/studies", files=[("files", ("RG1_J2KI.dcm", data, "application/dicom"))], headers=headers
        )
        assert upload.status_code == 201, upload.text
        [instance] = upload.json()["instances"]
        pixels = app_client.get(f"/api/instances/{instance['id']}/pixels", headers=headers)
    assert pixels.status_code == 200, pixels.text
    image = np.frombuffer(pixels.content, dtype="<u2")
    assert image.size == 1955 * 1841 and image.max() > image.min()
    with session_scope() as session:
        key = session.scalar(select(Instance.storage_key).where(Instance.id == instance["id"]))
    assert key == f"{sha256[:2]}/{sha256}"
    assert s3_server.object_names(bucket) == [f"lumen/{key}", f"lumen/{key}-preview"]
    assert (s3_server.root / bucket / "lumen" / key).read_bytes() == data
    after = sorted(local_blobs.rglob("*")) if local_blobs.exists() else []
    assert after == before, "the upload wrote to the local blob folder"


def test_an_unreachable_store_is_a_503_and_no_rows(app_client, auth_headers) -> None:
    data = fresh_dicom(DICOM / "RG1_J2KI.dcm")
    endpoint = f"http://127.0.0.1:{free_port()}"
    with settings_env(_unreachable_env(endpoint, 0.5)):
        upload = app_client.post(
            "/api/studies", files=[("files", ("RG1_J2KI.dcm", data, "application/dicom"))], headers=auth_headers()
        )
    assert upload.status_code == 503, upload.text
    assert upload.json()["detail"] == "the file store is not reachable; try again in a few seconds"
    assert upload.headers["retry-after"] == "5"
    assert endpoint not in upload.text  # where the store is stays in the server's log
    with session_scope() as session:
        sha256 = hashlib.sha256(data).hexdigest()
        assert session.scalar(select(Instance.id).where(Instance.sha256 == sha256)) is None
