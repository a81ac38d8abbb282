"""POST/GET /api/studies on the real app and Postgres: storing, decoding, dedupe, refusals that store nothing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from app.config import get_settings
from app.db import session_scope
from app.ingest import pixels
from app.storage import get_blob_store
from app.tables import AiModel, AuditEvent, Instance, Study

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DICOM = FIXTURES / "dicom"
IMAGES = FIXTURES / "images"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def fresh_uids(data: bytes, *, study_uid: str | None = None) -> bytes:
    """The same file with new Study/Series/SOP Instance UIDs (so tests do not meet each other's instances)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName = "Test^Patient"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def unique_png() -> bytes:
    """The fundus fixture as a PNG no other test uploads (PNG/JPEG dedupe by content)."""
    info = PngInfo()
    info.add_text("test", generate_uid())
    buffer = io.BytesIO()
    Image.open(IMAGES / "IDRiD_03_small.png").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def counts() -> tuple[int, int]:
    with session_scope() as session:
        return (
            int(session.scalar(select(func.count(Study.id))) or 0),
            int(session.scalar(select(func.count(Instance.id))) or 0),
        )


def blob_count() -> int:
    root = get_settings().blob_dir
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def stored_bytes(instance_id: int) -> tuple[bytes, Instance]:
    with session_scope() as session:
        instance = session.get(Instance, instance_id)
        assert instance is not None
        session.expunge(instance)
    return get_blob_store().get(instance.storage_key), instance


@pytest.fixture(scope="module")
def headers(auth_headers) -> dict[str, str]:
    return auth_headers("admin")


def upload(client, headers, *files: tuple[str, bytes], data: dict[str, str] | None = None):
    return client.post("/api/studies", headers=headers, files=[("files", f) for f in files], data=data or {})


def test_anonymous_gets_401_and_reader_403(app_client, auth_headers) -> None:
    body = (DICOM / "JPEG-LL.dcm").read_bytes()
    assert app_client.post("/api/studies", files=[("files", ("a.dcm", body))]).status_code == 401
    response = upload(app_client, auth_headers("reader"), ("a.dcm", body))
    assert response.status_code == 403
    assert app_client.get("/api/studies", headers=auth_headers("reader")).status_code == 200


def test_jpeg2000_monochrome1_radiograph_is_stored_and_displays_inverted(app_client, headers, db_session) -> None:
    response = upload(app_client, headers, ("RG1_J2KI.dcm", fresh_uids((DICOM / "RG1_J2KI.dcm").read_bytes())))
    assert response.status_code == 201, response.text
    body = response.json()
    (instance,) = body["instances"]
    assert (instance["rows"], instance["columns"], instance["frames"]) == (1955, 1841, 1)
    assert instance["photometric"] == "MONOCHROME1" and instance["duplicate"] is False
    assert body["modality"] == "CR" and [s["id"] for s in body["studies"]] == [body["id"]]
    assert db_session.get(Study, body["id"]).patient_name == "Test^Patient"

    data, row = stored_bytes(instance["id"])
    assert row.transfer_syntax_uid == pydicom.uid.JPEG2000 and row.sha256 and row.size_bytes == len(data)
    raw = pixels.load_frame(data, row.source_format)
    assert raw.shape == (1955, 1841)
    shown = pixels.to_display(
        raw, photometric=row.photometric, window_center=row.window_center, window_width=row.window_width
    )
    # Inverted: where the raw value is high the display is dark.
    high = raw > np.median(raw)
    assert shown[high].mean() < shown[~high].mean()
    assert np.corrcoef(raw[::8, ::8].ravel(), shown[::8, ::8].ravel())[0, 1] < -0.5

    detail = app_client.get(f"/api/studies/{body['id']}", headers=headers).json()
    assert [i["id"] for i in detail["instances"]] == [instance["id"]]
    listed = {s["id"]: s for s in app_client.get("/api/studies", headers=headers).json()}
    assert listed[body["id"]]["instance_count"] == 1


def test_palette_colour_without_preamble_is_stored_as_part10_and_decodes_to_rgb(app_client, headers) -> None:
    response = upload(app_client, headers, ("OT-PAL-8-face.dcm", (DICOM / "OT-PAL-8-face.dcm").read_bytes()))
    assert response.status_code == 201, response.text
    instance = response.json()["instances"][0]
    assert instance["photometric"] == "PALETTE COLOR"
    data, row = stored_bytes(instance["id"])
    assert data[128:132] == b"DICM"
    rgb = pixels.load_frame(data, row.source_format)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize(
    ("name", "frames"),
    [
        ("emri_small_jpeg_ls_lossless.dcm", 10),
        ("JPEG-LL.dcm", 1),
        ("emri_small_RLE.dcm", 10),
        ("HTJ2K_08_RGB.dcm", 1),
        ("emri_small.dcm", 10),
    ],
)
def test_encodings_are_stored_and_decode(app_client, headers, name: str, frames: int) -> None:
    response = upload(app_client, headers, (name, fresh_uids((DICOM / name).read_bytes())))
    assert response.status_code == 201, response.text
    instance = response.json()["instances"][0]
    assert instance["frames"] == frames
    data, row = stored_bytes(instance["id"])
    assert pixels.frame_count(data, row.source_format) == frames
    assert pixels.load_frame(data, row.source_format, frames - 1).shape[:2] == (row.rows, row.columns)


def test_same_file_twice_is_a_duplicate_and_other_content_is_409(app_client, headers) -> None:
    data = fresh_uids((DICOM / "JPEG-LL.dcm").read_bytes())
    first = upload(app_client, headers, ("a.dcm", data)).json()
    before = counts()
    again = upload(app_client, headers, ("a.dcm", data))
    assert again.status_code == 201
    assert again.json()["instances"][0] == {**first["instances"][0], "duplicate": True}
    assert again.json()["job_ids"] == [] and counts() == before

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientName = "Someone^Else"
    changed = io.BytesIO()
    ds.save_as(changed, enforce_file_format=True)
    conflict = upload(app_client, headers, ("b.dcm", changed.getvalue()))
    assert conflict.status_code == 409 and "b.dcm" in conflict.json()["detail"]
    assert counts() == before


def test_fundus_png_and_jpeg_form_one_op_study(app_client, headers) -> None:
    files = [(p.name, p.read_bytes()) for p in (IMAGES / "IDRiD_03_small.jpg", IMAGES / "IDRiD_03_small.png")]
    before = counts()
    response = upload(app_client, headers, *files)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["modality"] == "OP" and len(body["studies"]) == 1
    assert [i["source_format"] for i in body["instances"]] == ["jpeg", "png"]
    assert all(i["modality"] == "OP" and i["photometric"] == "RGB" for i in body["instances"])
    assert body["study_instance_uid"].startswith(pydicom.uid.PYDICOM_ROOT_UID)
    assert counts() == (before[0] + 1, before[1] + 2)
    again = upload(app_client, headers, *files).json()
    assert again["id"] == body["id"] and all(i["duplicate"] for i in again["instances"])
    assert counts() == (before[0] + 1, before[1] + 2)


def test_modality_override_is_validated_and_plans_jobs(app_client, headers, db_session) -> None:
    jpeg = (IMAGES / "IDRiD_03_small.jpg").read_bytes()
    assert upload(app_client, headers, ("x.jpg", jpeg), data={"modality": "op!"}).status_code == 422
    model = AiModel(
        name="test-xc", version="1", task="classification", labels=["a", "b"], modalities=["XC"],
        input_spec={}, weights_sha256="0" * 64, card={},
    )  # fmt: skip
    db_session.add(model)
    db_session.commit()
    try:
        response = upload(app_client, headers, ("x.png", unique_png()), data={"modality": "XC", "body_part": "eye"})
        body = response.json()
        assert response.status_code == 201 and body["modality"] == "XC" and len(body["job_ids"]) == 1
        job = app_client.get(f"/api/jobs/{body['job_ids'][0]}", headers=headers)
        assert job.status_code == 200 and job.json()["state"] == "queued"
    finally:
        model.is_active = False
        db_session.commit()


def test_upload_spanning_two_studies_lists_both(app_client, headers) -> None:
    a = fresh_uids((DICOM / "JPEG-LL.dcm").read_bytes())
    b = fresh_uids((DICOM / "emri_small.dcm").read_bytes())
    body = upload(app_client, headers, ("a.dcm", a), ("b.dcm", b)).json()
    assert len(body["studies"]) == 2 and body["studies"][0]["id"] == body["id"]
    with session_scope() as session:
        audited = session.scalars(
            select(AuditEvent.object_id).where(AuditEvent.action == "upload", AuditEvent.object_type == "study")
        ).all()
    assert {str(s["id"]) for s in body["studies"]} <= set(audited)


def _bad_files() -> dict[str, tuple[tuple[str, bytes], int, str]]:
    png = (IMAGES / "IDRiD_03_small.png").read_bytes()
    native = (DICOM / "emri_small.dcm").read_bytes()
    j2k = (DICOM / "RG1_J2KI.dcm").read_bytes()
    return {
        "png renamed .dcm": (("scan.dcm", png), 415, "named as DICOM"),
        "truncated native": (("cut.dcm", native[: len(native) - 5000]), 422, "truncated"),
        "truncated jpeg 2000": (("cut2k.dcm", j2k[: len(j2k) // 2]), 422, ""),
        "empty file": (("empty.dcm", b""), 400, "empty file"),
        "text file": (("notes.txt", b"hello, this is not an image\n"), 415, "not a DICOM file"),
        "no pixel data": (("plan.dcm", (PYDICOM_FILES / "rtplan.dcm").read_bytes()), 422, "no image pixel data"),
        "no transfer syntax": (("m.dcm", (PYDICOM_FILES / "meta_missing_tsyntax.dcm").read_bytes()), 422, "Syntax"),
        "no study uid": (("htj2k.dcm", (DICOM / "HTJ2K_08_RGB.dcm").read_bytes()), 422, "no StudyInstanceUID"),
    }


@pytest.mark.parametrize("case", list(_bad_files()))
def test_bad_file_is_refused_with_a_reason_and_nothing_stored(app_client, headers, case: str) -> None:
    (name, data), status, words = _bad_files()[case]
    good = ("good.dcm", fresh_uids((DICOM / "JPEG-LL.dcm").read_bytes()))
    before, blobs = counts(), blob_count()
    for files in ([(name, data)], [good, (name, data)]):
        response = upload(app_client, headers, *files)
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert name in detail and words in detail
        assert counts() == before and blob_count() == blobs


def test_empty_upload_is_400(app_client, headers) -> None:
    response = app_client.post("/api/studies", headers=headers, data={"modality": "OP"})
    assert response.status_code == 400 and "no files" in response.json()["detail"]


def test_over_the_size_cap_is_413(app_client, headers, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 10_000)
    before = counts()
    response = upload(app_client, headers, ("big.dcm", fresh_uids((DICOM / "JPEG-LL.dcm").read_bytes())))
    assert response.status_code == 413 and "big.dcm" in response.json()["detail"]
    assert counts() == before


def test_missing_study_is_404(app_client, headers) -> None:
    response = app_client.get("/api/studies/987654321", headers=headers)
    assert response.status_code == 404 and "987654321" in response.json()["detail"]


def test_cookie_caller_needs_the_csrf_token(app_client) -> None:
    from app.auth import service as auth_service
    from app.tables import Role

    with session_scope() as session:
        user = auth_service.create_user(
            session, email=f"cookie-{generate_uid()[-12:]}@example.org", password="correct horse battery",
            role=Role.coordinator,
        )  # fmt: skip
        token, row = auth_service.issue_token(session, user=user, kind="cookie", hours=1)
        csrf = row.csrf_token
    cookie = {"Cookie": f"lumen_session={token}"}
    file = ("files", ("u.png", unique_png()))
    assert app_client.post("/api/studies", headers=cookie, files=[file]).status_code == 403
    response = app_client.post("/api/studies", headers=cookie, files=[file], data={"csrf_token": csrf})
    assert response.status_code == 201, response.text


def _grayscale_png(value: int = 90) -> bytes:
    """A small grayscale PNG, unique per test run (a radiograph for the upload: no header says what it is)."""
    array = np.full((48, 40), value, dtype=np.uint8)
    array[8:40, 6:34] = np.random.default_rng().integers(0, 255, (32, 28), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_grayscale_image_must_name_its_modality_and_body_part(app_client, headers) -> None:
    before = counts()
    no_modality = upload(app_client, headers, ("chest.png", _grayscale_png()))
    assert no_modality.status_code == 422 and "'modality'" in no_modality.json()["detail"]
    no_body_part = upload(app_client, headers, ("chest.png", _grayscale_png()), data={"modality": "CR"})
    assert no_body_part.status_code == 422 and "'body_part'" in no_body_part.json()["detail"]
    bad = upload(app_client, headers, ("chest.png", _grayscale_png()), data={"modality": "CR", "body_part": "ch/est"})
    assert bad.status_code == 422 and "body_part" in bad.json()["detail"]
    assert counts() == before  # nothing stored by a refusal
    stored = upload(app_client, headers, ("chest.png", _grayscale_png()), data={"modality": "cr", "body_part": "chest"})
    assert stored.status_code == 201 and stored.json()["modality"] == "CR"
    with session_scope() as session:
        instance = session.get(Instance, stored.json()["instances"][0]["id"])
        assert (instance.modality, instance.series.body_part) == ("CR", "CHEST")


def test_a_colour_photograph_defaults_to_a_fundus_photograph(app_client, headers) -> None:
    body = upload(app_client, headers, ("fundus.png", unique_png())).json()
    with session_scope() as session:
        instance = session.get(Instance, body["instances"][0]["id"])
        assert (instance.modality, instance.series.body_part) == ("OP", "EYE")
