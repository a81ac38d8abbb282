"""The uploaded file's own name (instances.source_filename): stored without folders at ingest (API upload and
`lumen import`), shown where identity is shown (the worklist's label of a study without a patient name, the
study page), and nowhere to a reader, whose role does not see identity: a file name can name the patient."""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.db import session_scope
from app.ingest import service as ingest_service
from app.tables import Instance, Study
from tests.app.auth.helpers import sign_in

# Grayscale images of a modality no model reads: stored, no job planned.
ORIGIN = {"modality": "XA", "body_part": "CHEST"}


def _png() -> bytes:
    """A small PNG of its own (images are de-duplicated by content)."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(secrets.randbits(32)).integers(0, 256, (24, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(app_client, headers, names: list[str]) -> dict:
    files = [("files", (name, _png(), "image/png")) for name in names]
    response = app_client.post("/api/studies", headers=headers, files=files, data=ORIGIN)
    assert response.status_code == 201, response.text
    return response.json()


def _stored_names(study_id: int) -> list[str]:
    with session_scope() as session:
        study = session.get_one(Study, study_id)
        return [instance.source_filename for series in study.series for instance in series.instances]


def test_the_name_is_stored_without_folders_and_labels_the_worklist_row(app_client, auth_headers):
    coordinator = auth_headers("coordinator")
    one = _upload(app_client, coordinator, ["C:\\scans\\left eye.png"])
    two = _upload(app_client, coordinator, ["scans/a.png", "b.png"])
    assert _stored_names(one["id"]) == ["left eye.png"]
    assert sorted(_stored_names(two["id"])) == ["a.png", "b.png"]

    rows = {row["id"]: row for row in app_client.get("/api/worklist", headers=coordinator).json()["studies"]}
    with session_scope() as session:
        at = {study_id: f"{session.get_one(Study, study_id).created_at:%Y-%m-%d %H:%M:%S}" for study_id in rows}
    assert rows[one["id"]]["unnamed_label"] == f"left eye.png · 1 image uploaded {at[one['id']]}"
    assert rows[two["id"]]["unnamed_label"] == f"a.png +1 · 2 images uploaded {at[two['id']]}"


def test_a_reader_never_gets_the_name(app_client, auth_headers, make_user):
    name = f"smith-john-{secrets.token_hex(3)}.png"
    study_id = _upload(app_client, auth_headers("coordinator"), [name])["id"]
    coordinator, _ = make_user("coordinator")
    client = TestClient(app_client.app)  # a browser of its own: cookies
    sign_in(client, coordinator.email)
    assert name in client.get("/").text and name in client.get(f"/studies/{study_id}").text

    reader = auth_headers("reader")
    for url in ("/api/worklist", f"/api/worklist/{study_id}", f"/api/studies/{study_id}", "/api/studies",
                f"/api/studies/{study_id}/priors"):
        answer = app_client.get(url, headers=reader)
        assert answer.status_code == 200 and name not in answer.text, url
    reader_user, _ = make_user("reader")
    client = TestClient(app_client.app)
    sign_in(client, reader_user.email)
    for url in ("/", f"/studies/{study_id}", f"/studies/{study_id}/read"):
        answer = client.get(url)
        assert answer.status_code == 200 and name not in answer.text, url


def test_lumen_import_stores_the_name_and_a_nameless_file_none(tmp_path: Path):
    path = tmp_path / "nested" / "fundus-0042.png"
    path.parent.mkdir()
    path.write_bytes(_png())
    outcome = ingest_service.import_path(path, origin=ingest_service.ImageOrigin(**ORIGIN))
    assert outcome.startswith("stored study"), outcome
    instance_id = int(outcome.rsplit(" ", 1)[1])
    with session_scope() as session:
        assert session.get_one(Instance, instance_id).source_filename == "fundus-0042.png"
        # A file sent without a name is called "file 1" in messages, and stored without one.
        result = ingest_service.ingest_upload(
            session, files=[(None, io.BytesIO(_png()))], user_id=None, origin=ingest_service.ImageOrigin(**ORIGIN)
        )
        [(instance, duplicate)] = result.studies[0].instances
        assert (instance.source_filename, duplicate) == ("", False)
