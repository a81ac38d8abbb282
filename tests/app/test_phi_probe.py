"""The PHI probe: a DICOM stamped with unique identity strings is uploaded, put in a reader study and read by a
reader. No stamped string reaches any page or API response the reader can get (the bytes of PNG and raw pixel
responses and the response headers included), nor the reader study's exports; the coordinator, whose role
sees identity, does get them (so the probe is not blind)."""

from __future__ import annotations

import io
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from app.tables import JobState
from tests.app.viewer import factories

FINDING = {"finding": "present", "confidence": 4}
BIRTH_DATE = "19230417"


@dataclass(frozen=True)
class Probe:
    study_id: int
    instance_id: int
    heatmap_id: int
    needles: list[str]


def _stamped_dicom(token: str) -> tuple[bytes, list[str]]:
    """pydicom's CT_small, relabelled a chest radiograph (the images a binary-finding study reads), with every
    identity attribute (and the free-text descriptions) set to a string found nowhere else; returns the file and
    the strings to look for."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality, ds.BodyPartExamined = "CR", "CHEST"
    uids = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(), "SOPInstanceUID": generate_uid()}
    stamped = {
        "PatientName": f"PHIPROBE{token}^GIVEN",
        "PatientID": f"PHIID{token}",
        "PatientBirthDate": BIRTH_DATE,
        "AccessionNumber": f"PHIACC{token}",
        "InstitutionName": f"PHIINST{token}",
        "ReferringPhysicianName": f"PHIDOC{token}^REF",
        "OtherPatientIDs": f"PHIOTHER{token}",
        "StudyDescription": f"PHISTUDYDESC{token}",
        "SeriesDescription": f"PHISERIESDESC{token}",
        **uids,
    }
    for keyword, value in stamped.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = uids["SOPInstanceUID"]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    needles = [f"PHIPROBE{token}", f"PHIID{token}", BIRTH_DATE, "1923-04-17", f"PHIACC{token}", f"PHIINST{token}",
               f"PHIDOC{token}", f"PHIOTHER{token}", f"PHISTUDYDESC{token}", f"PHISERIESDESC{token}",
               *uids.values()]
    return buffer.getvalue(), needles


@pytest.fixture
def probe(app_client, auth_headers, db_session, coordinator) -> Probe:
    """The stamped DICOM uploaded by a coordinator, with a prediction and a GradCAM heatmap added."""
    data, needles = _stamped_dicom(secrets.token_hex(5))
    upload = app_client.post("/api/studies", headers=coordinator, files=[("files", ("probe.dcm", data))])
    assert upload.status_code == 201, upload.text
    body = upload.json()
    stored = factories.StoredStudy(body["id"], body["instances"][0]["id"])
    job = factories.add_job(db_session, stored, state=JobState.done, progress=100)
    _, heatmap = factories.add_prediction(db_session, job)
    db_session.commit()
    return Probe(stored.study_id, stored.instance_id, heatmap.id, needles)


@pytest.fixture
def coordinator(auth_headers) -> dict[str, str]:
    return auth_headers("coordinator")


def _leaks(response, needles: list[str]) -> list[str]:
    """The stamped strings in a response: its body as bytes (PNG, raw pixels, HTML, JSON) and its headers."""
    raw = response.content + json.dumps(dict(response.headers)).encode()
    return [needle for needle in needles if needle.encode() in raw]


def _study_ids(data: Any) -> Iterator[Any]:
    """Every `study_id`, and the `id` of every `study`, anywhere in a JSON document."""
    if isinstance(data, dict):
        for name, value in data.items():
            if name == "study_id":
                yield value
            if name == "study" and isinstance(value, dict):
                yield value.get("id")
            yield from _study_ids(value)
    elif isinstance(data, list):
        for item in data:
            yield from _study_ids(item)


def _open_study(client, coordinator, *, probe: Probe, reader_email: str) -> int:
    conditions = [{"key": "aided", "kind": "prediction_heatmap", "method": "gradcam"}]
    created = client.post("/api/reader-studies", headers=coordinator,
                          json={"name": f"probe-{secrets.token_hex(3)}", "conditions": conditions,
                                "task": "binary_finding", "finding": "effusion"})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    for path, body in ((f"/api/reader-studies/{sid}/cases", {"study_ids": [probe.study_id]}),
                       (f"/api/reader-studies/{sid}/readers", {"emails": [reader_email]}),
                       (f"/api/reader-studies/{sid}/open", {})):
        response = client.post(path, headers=coordinator, json=body)
        assert response.status_code == 200, (path, response.text)
    return sid


def test_no_stamped_string_reaches_the_reader_or_the_exports(app_client, make_user, coordinator, probe):
    client = app_client
    # The coordinator's role sees identity: the probe's strings are stored and shown (the probe can fail).
    shown = client.get(f"/api/worklist/{probe.study_id}", headers=coordinator).json()
    assert shown["patient_name"].startswith("PHIPROBE") and shown["patient_id"].startswith("PHIID")
    assert client.get(f"/api/studies/{probe.study_id}", headers=coordinator).json()["study_instance_uid"] in (
        probe.needles
    )

    reader, token = make_user("reader")
    headers = {"Authorization": f"Bearer {token}"}
    sid = _open_study(client, coordinator, probe=probe, reader_email=reader.email)
    queue = client.get(f"/api/reader-studies/{sid}/queue", headers=headers)
    (item,) = queue.json()["assignments"]
    assignment = client.get(f"/api/assignments/{item['id']}", headers=headers)
    assert assignment.status_code == 200, assignment.text
    pending = {
        "queue API": queue,
        "queue page": client.get(f"/reader-studies/{sid}/queue", headers=headers),
        "assignment JSON": assignment,
        "assignment page": client.get(f"/assignments/{item['id']}/read", headers=headers),
    }
    # The browser sends no study id for a reader-study read (it has none); the read does not name it either.
    submitted = client.post(f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit", headers=headers,
                            json={"study_id": None, "answers": FINDING, "time_spent_seconds": 3})
    assert submitted.status_code == 201, submitted.text
    # Nothing the reader gets about their case carries an id that links it back to the stored study.
    for name, data in (("queue", queue.json()), ("assignment", assignment.json()), ("read", submitted.json())):
        assert probe.study_id not in set(_study_ids(data)), name
    assert submitted.json()["study_id"] is None and assignment.json()["study"]["id"] is None

    study, instance, heatmap = probe.study_id, probe.instance_id, probe.heatmap_id
    after = {
        "worklist page": client.get("/", headers=headers),
        "worklist API": client.get("/api/worklist", headers=headers),
        "worklist row": client.get(f"/api/worklist/{study}", headers=headers),
        "study page": client.get(f"/studies/{study}", headers=headers),
        "reading page": client.get(f"/studies/{study}/read", headers=headers),
        "studies list": client.get("/api/studies", headers=headers),
        "study JSON": client.get(f"/api/studies/{study}", headers=headers),
        "prediction": client.get(f"/api/instances/{instance}/prediction", headers=headers),
        "image PNG": client.get(f"/api/instances/{instance}/image.png", headers=headers),
        "preview PNG": client.get(f"/api/instances/{instance}/image.png?max_size=96", headers=headers),
        "pixels": client.get(f"/api/instances/{instance}/pixels", headers=headers),
        "heatmap PNG": client.get(f"/api/heatmaps/{heatmap}.png", headers=headers),
        "heatmap data": client.get(f"/api/heatmaps/{heatmap}/data", headers=headers),
        "read again": client.get(f"/api/reads/{submitted.json()['client_id']}", headers=headers),
        "reader studies page": client.get("/reader-studies", headers=headers),
        "done assignment page": client.get(f"/assignments/{item['id']}/read", headers=headers),
        "done assignment JSON": client.get(f"/api/assignments/{item['id']}", headers=headers),
    }
    for name, response in {**pending, **after}.items():
        assert response.status_code in (200, 201), (name, response.status_code, response.text[:300])
        assert _leaks(response, probe.needles) == [], name
    assert after["read again"].json()["study_id"] is None
    assert probe.study_id not in set(_study_ids(after["done assignment JSON"].json()))
    # The clinical reading room of the study does not show the reader their reader-study read of it.
    assert submitted.json()["client_id"] not in after["reading page"].text

    exports = {
        "CSV": client.get(f"/api/reader-studies/{sid}/export.csv", headers=coordinator),
        "JSON": client.get(f"/api/reader-studies/{sid}/export.json", headers=coordinator),
    }
    for name, response in exports.items():
        assert response.status_code == 200, name
        assert _leaks(response, probe.needles) == [], name
    assert "C0001" in exports["CSV"].text
