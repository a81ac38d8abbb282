"""Lumen against a PACS no one here wrote: Debian's Orthanc with its DICOMweb plugin, on loopback.

Orthanc sends studies to Lumen by C-STORE (to `lumen dicom-listener`) and by STOW-RS (to /dicomweb); Orthanc's
own DICOMweb client searches Lumen (QIDO-RS) and pulls a study from it (WADO-RS); what arrives on either side is
the same file, pixel for pixel."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest

from app.config import get_settings
from app.db import session_scope
from app.dimse import listener
from app.main import create_app
from app.tables import Instance, Job, Prediction
from tests.conftest import FIXTURES
from tests.e2e.helpers import free_port, fresh_dicom, running_server
from tests.interop.orthanc import ORTHANC_AET, Orthanc, running_orthanc

CHEST = FIXTURES / "dicom" / "RG1_J2KI.dcm"
MR = FIXTURES / "dicom" / "MR2_J2KI.dcm"


@pytest.fixture(scope="module")
def lumen(make_user) -> Iterator[tuple[str, str]]:
    """Lumen's API on loopback (its models registered) and an admin's bearer token."""
    from app.ai_models.sync import sync_now

    sync_now()
    _, token = make_user("admin")
    with running_server(create_app(run_sweeper=False)) as base:
        yield base, token


@pytest.fixture(scope="module")
def lumen_listener() -> Iterator[int]:
    """Lumen's C-STORE listener, taking studies from Orthanc's AE title only."""
    settings = get_settings()
    allowed = settings.dicom_allowed_aes
    settings.dicom_allowed_aes = [ORTHANC_AET]
    port = free_port()
    server = listener.serve(port=port, host="127.0.0.1", block=False)
    yield port
    server.shutdown()
    settings.dicom_allowed_aes = allowed


@pytest.fixture(scope="module")
def orthanc(lumen, lumen_listener, tmp_path_factory) -> Iterator[Orthanc]:
    base, token = lumen
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), http_port=free_port(), dicom_port=free_port(),
                         lumen_dicomweb=f"{base}/dicomweb", lumen_token=token,
                         lumen_dicom=(get_settings().dicom_ae_title, lumen_listener)) as server:
        yield server


def _stored_in_lumen(sop_uid: str) -> Instance | None:
    with session_scope(writes=False) as session:
        instance = session.query(Instance).filter_by(sop_instance_uid=sop_uid).one_or_none()
        if instance is not None:
            session.expunge(instance)
        return instance


def test_orthanc_sends_a_study_to_lumen_by_c_store(orthanc: Orthanc) -> None:
    data = fresh_dicom(CHEST)
    dataset = pydicom.dcmread(io.BytesIO(data))
    orthanc_id = orthanc.upload(data)
    with orthanc.rest() as client:
        response = client.post("/modalities/lumen/store", json={"Resources": [orthanc_id], "Synchronous": True})
    assert response.status_code == 200, response.text
    instance = _stored_in_lumen(dataset.SOPInstanceUID)
    assert instance is not None, orthanc.log.read_text()[-2000:]
    assert instance.transfer_syntax_uid == dataset.file_meta.TransferSyntaxUID
    with session_scope(writes=False) as session:  # a chest radiograph gets the chest model's job, as an upload
        jobs = session.query(Job).filter_by(instance_id=instance.id).all()
        assert [job.model.name for job in jobs] == ["cxr-nih14"]


def test_orthanc_sends_a_study_to_lumen_by_stow_rs(orthanc: Orthanc) -> None:
    data = fresh_dicom(MR)
    dataset = pydicom.dcmread(io.BytesIO(data))
    orthanc.upload(data)
    with orthanc.rest() as client:
        [study] = client.post("/tools/find", json={"Level": "Study", "Query": {
            "StudyInstanceUID": dataset.StudyInstanceUID}}).json()
        response = client.post("/dicom-web/servers/lumen/stow", json={"Resources": [study], "Synchronous": True})
    assert response.status_code == 200, response.text
    instance = _stored_in_lumen(dataset.SOPInstanceUID)
    assert instance is not None, orthanc.log.read_text()[-2000:]


def test_orthanc_searches_lumen_and_pulls_a_study_over_dicomweb(lumen, orthanc: Orthanc) -> None:
    from dicomweb_client.api import DICOMwebClient

    base, token = lumen
    dataset = pydicom.dcmread(io.BytesIO(fresh_dicom(MR)))
    dataset.PatientID = "INTEROP-PULL"
    DICOMwebClient(f"{base}/dicomweb", headers={"Authorization": f"Bearer {token}"}).store_instances([dataset])
    with orthanc.rest() as client:
        # The plugin's generic GET through the configured server: a QIDO-RS search of Lumen.
        found = client.post("/dicom-web/servers/lumen/get",
                            json={"Uri": "/studies", "Arguments": {"PatientID": "INTEROP-PULL"}})
        assert found.status_code == 200, found.text
        assert [study["0020000D"]["Value"][0] for study in found.json()] == [dataset.StudyInstanceUID]
        pulled = client.post("/dicom-web/servers/lumen/retrieve",
                             json={"Resources": [{"Study": dataset.StudyInstanceUID}], "Synchronous": True})
        assert pulled.status_code == 200, pulled.text
        [orthanc_id] = client.post("/tools/find", json={"Level": "Instance", "Query": {
            "SOPInstanceUID": dataset.SOPInstanceUID}}).json()
        back = pydicom.dcmread(io.BytesIO(client.get(f"/instances/{orthanc_id}/file").content))
    assert back.SOPInstanceUID == dataset.SOPInstanceUID
    assert (back.pixel_array == dataset.pixel_array).all()


def _predicted_in_lumen(orthanc: Orthanc) -> tuple[pydicom.Dataset, int]:
    """A chest CR sent from Orthanc to Lumen by C-STORE and explained by Lumen's real pipeline (cxr-nih14, two
    maps): the source dataset and the prediction's id."""
    from workers import pipeline

    data = fresh_dicom(CHEST)
    dataset = pydicom.dcmread(io.BytesIO(data))
    orthanc_id = orthanc.upload(data)
    with orthanc.rest() as client:
        client.post("/modalities/lumen/store", json={"Resources": [orthanc_id], "Synchronous": True}).raise_for_status()
    instance = _stored_in_lumen(dataset.SOPInstanceUID)
    assert instance is not None
    with session_scope() as session:
        [job] = session.query(Job).filter_by(instance_id=instance.id).all()
        job.methods = ["gradcam", "saliency"]
        job_id = job.id
    assert pipeline.run_job(job_id, worker="interop") == pipeline.Outcome.done
    with session_scope(writes=False) as session:
        [prediction] = session.query(Prediction).filter_by(job_id=job_id).all()
        return dataset, prediction.id


PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"


def _results_in_orthanc(orthanc: Orthanc, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    """Every instance of the study in Orthanc, read back as files, by kind: source, map, report, capture."""
    found: dict[str, list[pydicom.Dataset]] = {}
    with orthanc.rest() as client:
        for orthanc_id in client.post("/tools/find", json={"Level": "Instance", "Query": {
                "StudyInstanceUID": study_uid}}).json():
            dataset = pydicom.dcmread(io.BytesIO(client.get(f"/instances/{orthanc_id}/file").content))
            sop_class = str(dataset.SOPClassUID)
            kind = ("map" if sop_class == PARAMETRIC_MAP else "report" if sop_class.startswith(
                "1.2.840.10008.5.1.4.1.1.88.") else "capture" if sop_class.startswith(
                "1.2.840.10008.5.1.4.1.1.7") else "source")
            found.setdefault(kind, []).append(dataset)
    return found


@pytest.mark.parametrize("route", ["stow-rs", "c-store"])
def test_lumen_results_arrive_in_orthanc_as_dicom_and_read_back(orthanc: Orthanc, route: str, monkeypatch) -> None:
    """The prediction of a chest CR as a Structured Report, a Parametric Map per heatmap and a Secondary Capture,
    pushed as a finished job pushes them; read back from Orthanc, parsed by highdicom, equal to what Lumen made."""
    import highdicom as hd

    from app.dicom_results import push
    from app.dicom_results.objects import map_method, results_for_prediction
    from app.dicom_results.rendering import resample
    from app.tables import Heatmap
    from app.viewer.images import heatmap_array

    source, prediction_id = _predicted_in_lumen(orthanc)
    settings = get_settings()
    if route == "stow-rs":
        monkeypatch.setattr(settings, "dicom_push_url", f"{orthanc.url}/dicom-web")
    else:
        monkeypatch.setattr(settings, "dicom_push_ae", f"{ORTHANC_AET}@127.0.0.1:{orthanc.dicom_port}")
    with session_scope() as session:
        assert push.push_results(session, prediction_id) == 4
        made = {str(d.SOPInstanceUID): d for d in results_for_prediction(session, prediction_id)}
        heatmaps = session.query(Heatmap).filter_by(prediction_id=prediction_id)
        stored_maps = {heatmap.method: heatmap_array(heatmap) for heatmap in heatmaps}

    arrived = _results_in_orthanc(orthanc, source.StudyInstanceUID)
    assert {kind: len(items) for kind, items in arrived.items()} == {"source": 1, "map": 2, "report": 1,
                                                                     "capture": 1}, orthanc.log.read_text()[-2000:]
    assert set(made) == {str(d.SOPInstanceUID) for kind in ("map", "report", "capture") for d in arrived[kind]}
    [report] = arrived["report"]
    parsed = hd.sr.srread(io.BytesIO(_part10(report)))
    assert parsed.SOPInstanceUID == report.SOPInstanceUID and "cxr-nih14" in str(report)
    for pm in arrived["map"]:
        parsed_map = hd.pm.ParametricMap.from_dataset(pm)
        [referenced] = [item.ReferencedSOPInstanceUID for series in pm.ReferencedSeriesSequence
                        for item in series.ReferencedInstanceSequence]
        assert referenced == source.SOPInstanceUID  # the reference resolves to the source, in the same study
        assert pm.StudyInstanceUID == source.StudyInstanceUID
        ours = hd.pm.ParametricMap.from_dataset(made[str(pm.SOPInstanceUID)])
        values = np.asarray(parsed_map.pixel_array, dtype=np.float32).reshape(source.Rows, source.Columns)
        np.testing.assert_array_equal(values, np.asarray(ours.pixel_array, dtype=np.float32).reshape(values.shape))
        # And they are the stored heatmap itself, resampled to the radiograph's grid (float16 in Lumen's store).
        expected = resample(stored_maps[map_method(pm)], rows=source.Rows, columns=source.Columns)
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))
    methods = sorted(str(pm.SeriesDescription) for pm in arrived["map"])
    assert [m for m in methods if "gradcam" in m.lower() or "grad-cam" in m.lower()] and len(methods) == 2, methods
    [overlay] = arrived["capture"]
    assert overlay.SamplesPerPixel == 3 and (overlay.Rows, overlay.Columns) == (source.Rows, source.Columns)
    assert len(stored_maps) == 2


def _part10(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_coordinator_imports_reader_study_cases_from_orthanc(lumen, orthanc: Orthanc, monkeypatch) -> None:
    """Orthanc as the hospital's archive: searched by QIDO-RS through Lumen, the chosen study fetched by WADO-RS,
    stored as an upload and added as a case of a draft reader study; a study already stored is not fetched again."""
    import httpx

    base, token = lumen
    headers = {"Authorization": f"Bearer {token}"}
    monkeypatch.setattr(get_settings(), "archive_dicomweb_url", f"{orthanc.url}/dicom-web")
    datasets = []
    for _ in range(2):
        data = fresh_dicom(MR)
        dataset = pydicom.dcmread(io.BytesIO(data))
        dataset.PatientID = "ARCHIVE-CASES"
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        orthanc.upload(buffer.getvalue())
        datasets.append(dataset)
    found = httpx.get(f"{base}/api/archive/studies", params={"PatientID": "ARCHIVE-CASES"}, headers=headers)
    assert found.status_code == 200, found.text
    assert sorted(s["study_instance_uid"] for s in found.json()) == sorted(d.StudyInstanceUID for d in datasets)
    assert all(s["stored_study_id"] is None and s["modalities"] == ["MR"] for s in found.json())

    design = httpx.post(f"{base}/api/reader-studies", headers=headers,
                        json={"name": "archive cases", "task": "explanation_rating", "conditions": [
                            {"key": "gradcam", "kind": "prediction_heatmap", "method": "gradcam",
                             "label": "Grad-CAM"}]})
    assert design.status_code == 201, design.text
    chosen = datasets[0].StudyInstanceUID
    imported = httpx.post(f"{base}/api/archive/import", headers=headers, timeout=60,
                          json={"study_uids": [chosen], "reader_study_id": design.json()["id"]})
    assert imported.status_code == 200, imported.text
    assert imported.json()["refused"] == {} and imported.json()["cases_added"] == 1, imported.json()
    stored = _stored_in_lumen(datasets[0].SOPInstanceUID)
    assert stored is not None and stored.sop_class_uid == datasets[0].SOPClassUID
    again = httpx.get(f"{base}/api/archive/studies", params={"PatientID": "ARCHIVE-CASES"}, headers=headers).json()
    assert {s["study_instance_uid"]: s["stored_study_id"] is not None for s in again} == {
        chosen: True, datasets[1].StudyInstanceUID: False}

    unknown = httpx.get(f"{base}/api/archive/studies", params={"ReferringPhysicianName": "X"}, headers=headers)
    assert unknown.status_code == 200  # not a parameter of the route: ignored by FastAPI, never sent to the archive
    monkeypatch.setattr(get_settings(), "archive_dicomweb_url", None)
    unset = httpx.get(f"{base}/api/archive/studies", params={"PatientID": "X"}, headers=headers)
    assert unset.status_code == 409 and "LUMEN_ARCHIVE_DICOMWEB_URL" in unset.json()["detail"]


@pytest.mark.browser
def test_the_reader_study_page_imports_cases_from_the_archive(lumen, orthanc: Orthanc, browser, make_user,
                                                             monkeypatch) -> None:
    """The coordinator's side of the same: search the archive on the reader study's page, tick, import."""
    import httpx

    from tests.app.auth.helpers import PASSWORD

    base, token = lumen
    monkeypatch.setattr(get_settings(), "archive_dicomweb_url", f"{orthanc.url}/dicom-web")
    dataset = pydicom.dcmread(io.BytesIO(fresh_dicom(MR)))
    dataset.PatientID = "ARCHIVE-PAGE"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    orthanc.upload(buffer.getvalue())
    design = httpx.post(f"{base}/api/reader-studies", headers={"Authorization": f"Bearer {token}"},
                        json={"name": "archive page", "task": "explanation_rating", "conditions": [
                            {"key": "gradcam", "kind": "prediction_heatmap", "method": "gradcam",
                             "label": "Grad-CAM"}]}).json()
    user, _ = make_user("coordinator")
    page = browser.new_page()
    try:
        page.goto(f"{base}/login")
        page.fill('input[name="email"]', user.email)
        page.fill('input[name="password"]', PASSWORD)
        page.click('button[type="submit"]')
        page.wait_for_load_state()
        page.goto(f"{base}/reader-studies/{design['id']}")
        page.click("#archive-import summary")
        page.fill('#archive-search [name="PatientID"]', "ARCHIVE-PAGE")
        page.click("#archive-search-button")
        page.wait_for_selector(f"#archive-results tr[data-uid='{dataset.StudyInstanceUID}']")
        page.check(f"#archive-results tr[data-uid='{dataset.StudyInstanceUID}'] input")
        with page.expect_navigation(timeout=60_000):
            page.click("#archive-import-button")
        assert page.inner_text("#cases-title").upper().startswith("CASES 1 ")  # the imported study, now a case
    finally:
        page.close()
    assert _stored_in_lumen(dataset.SOPInstanceUID) is not None
