"""Pushing the results to a real pynetdicom Storage SCP on a free loopback port, and the push task a finished
job sends through the real broker (Redis)."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import ParametricMapStorage
from pynetdicom import AE, StoragePresentationContexts, evt

from app.config import get_settings
from app.db import session_scope
from app.dicom_results import objects, push
from app.dicom_results.service import part10
from app.jobs import service as jobs_service
from app.queue import PUSH_RESULTS_QUEUE, PUSH_RESULTS_TASK
from app.tables import Job, JobState
from tests.app.dicom_results.conftest import StoredPrediction
from tests.app.viewer import factories
from tests.conftest import broker_redis, queue_key
from tests.settings import settings_env

OUT_OF_RESOURCES = 0xA700


@dataclass
class Archive:
    """What the SCP kept: the datasets it stored, the calling AE title of each C-STORE, the statuses it answered."""

    stored: list[Dataset] = field(default_factory=list)
    callers: list[str] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)


@contextmanager
def storage_scp(*, refusals: int = 0, parametric_maps: bool = True) -> Iterator[tuple[str, Archive]]:
    """A Storage SCP (AE title STORESCP) on a free loopback port, answering the first `refusals` C-STOREs
    "out of resources"; its AE@host:port and what it keeps. Parametric Maps are not among pynetdicom's 120 default
    storage contexts: taken only if asked."""
    archive = Archive()

    def on_store(event: evt.Event) -> int:
        archive.callers.append(event.assoc.requestor.ae_title)
        if len(archive.answered) < refusals:
            archive.answered.append(OUT_OF_RESOURCES)
            return OUT_OF_RESOURCES
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        archive.stored.append(dataset)
        archive.answered.append(0x0000)
        return 0x0000

    ae = AE(ae_title="STORESCP")
    ae.supported_contexts = StoragePresentationContexts
    if parametric_maps:
        ae.add_supported_context(ParametricMapStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    try:
        yield f"STORESCP@127.0.0.1:{server.server_address[1]}", archive
    finally:
        server.shutdown()


def same_values(received: Dataset, sent: Dataset) -> bool:
    """Every element with the same value, in sequences too, pixel data included. The VR is not compared: a dataset
    sent in Implicit VR arrives with its pixel data as OW where it was written OB."""
    return set(received.keys()) == set(sent.keys()) and all(
        all(same_values(a, b) for a, b in zip(received[tag].value, sent[tag].value, strict=True))
        if received[tag].VR == "SQ" else received[tag].value == sent[tag].value
        for tag in received.keys()  # noqa: SIM118 (a Dataset iterates over its elements, not its tags)
    )


def test_the_push_task_sends_every_object_whole_by_c_store(chest_prediction: StoredPrediction, monkeypatch) -> None:
    from workers import tasks  # the worker's task module (it imports torch)

    expected: list[Dataset] = []
    making = objects.results_for_prediction

    def kept(*args: Any, **kwargs: Any) -> list[Dataset]:
        # What was sent, as it was made (each making has its own creation times).
        expected.extend(making(*args, **kwargs))
        return expected

    monkeypatch.setattr(objects, "results_for_prediction", kept)
    assert tasks.push_results.name == PUSH_RESULTS_TASK
    with storage_scp() as (destination, archive), settings_env({"LUMEN_DICOM_PUSH_AE": destination}):
        assert tasks.push_results(chest_prediction.prediction_id) == 4
    assert set(archive.callers) == {"LUMEN"}
    assert [d.SOPInstanceUID for d in archive.stored] == [d.SOPInstanceUID for d in expected]
    for received, sent in zip(archive.stored, expected, strict=True):
        assert same_values(received, pydicom.dcmread(io.BytesIO(part10(sent))))
    for received in archive.stored[2:]:
        values = hd.pm.ParametricMap.from_dataset(received).pixel_array
        assert values.size == chest_prediction.source.Rows * chest_prediction.source.Columns
        assert np.isfinite(values).all()


def test_a_refused_store_is_tried_again_with_backoff(chest_prediction: StoredPrediction, caplog) -> None:
    caplog.set_level(logging.INFO, logger="app.dicom_results.push")
    with (
        storage_scp(refusals=1) as (destination, archive),
        settings_env({"LUMEN_DICOM_PUSH_AE": destination}),
        session_scope(writes=False) as session,
    ):
        assert push.push_results(session, chest_prediction.prediction_id, first_backoff_seconds=0.01) == 4
    assert archive.answered == [OUT_OF_RESOURCES, 0, 0, 0, 0]
    assert len({d.SOPInstanceUID for d in archive.stored}) == 4
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"sending to {destination} failed (attempt 1 of 4)" in m and "status 0xA700" in m for m in messages)
    assert any(f"4 of its 4 DICOM objects stored by {destination} (attempt 2)" in m for m in messages)


def test_the_last_failure_names_the_destination(chest_prediction: StoredPrediction) -> None:
    with (
        storage_scp(refusals=99) as (destination, archive),
        settings_env({"LUMEN_DICOM_PUSH_AE": destination}),
        session_scope(writes=False) as session,
        pytest.raises(push.PushFailed) as failed,
    ):
        push.push_results(session, chest_prediction.prediction_id, attempts=3, first_backoff_seconds=0.01)
    assert f"to {destination} after 3 attempts" in str(failed.value) and "status 0xA700" in str(failed.value)
    assert archive.answered == [OUT_OF_RESOURCES] * 3 and archive.stored == []


def test_nobody_listening_fails_with_the_destination_named(chest_prediction: StoredPrediction) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    destination = f"PACS@127.0.0.1:{port}"
    with (
        settings_env({"LUMEN_DICOM_PUSH_AE": destination}),
        session_scope(writes=False) as session,
        pytest.raises(push.PushFailed, match=f"to {destination} after 2 attempts: .*did not accept"),
    ):
        push.push_results(session, chest_prediction.prediction_id, attempts=2, first_backoff_seconds=0.01)


def test_a_dicomweb_service_that_is_down_fails_with_its_url_named(chest_prediction: StoredPrediction) -> None:
    """STOW-RS against a stopped server (a real Orthanc is the interoperability tests' part)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/dicom-web"
    with (
        settings_env({"LUMEN_DICOM_PUSH_URL": url}),
        session_scope(writes=False) as session,
        pytest.raises(push.PushFailed, match=f"to {url} after 2 attempts: .*Connection refused"),
    ):
        push.push_results(session, chest_prediction.prediction_id, attempts=2, first_backoff_seconds=0.01)


def test_an_archive_without_parametric_maps_gets_the_report_and_the_overlay(
    chest_prediction: StoredPrediction, caplog
) -> None:
    with (
        storage_scp(parametric_maps=False) as (destination, archive),
        settings_env({"LUMEN_DICOM_PUSH_AE": destination}),
        session_scope(writes=False) as session,
    ):
        assert push.push_results(session, chest_prediction.prediction_id) == 2
    assert [d.Modality for d in archive.stored] == ["SR", "OT"]
    assert "does not take Parametric Map Storage objects" in caplog.text


def test_the_settings_take_one_destination_of_the_right_shape() -> None:
    wrong: list[dict[str, str | None]] = [
        {"LUMEN_DICOM_PUSH_AE": "PACS@host"}, {"LUMEN_DICOM_PUSH_URL": "orthanc:8042/dicom-web"},
        {"LUMEN_DICOM_PUSH_AE": "PACS@host:104", "LUMEN_DICOM_PUSH_URL": "http://orthanc:8042/dicom-web"},
    ]
    for env in wrong:
        with pytest.raises(ValueError, match="LUMEN_DICOM_PUSH"), settings_env(env):
            get_settings()
    with settings_env({"LUMEN_DICOM_PUSH_AE": "ORTHANC@pacs.example.org:4242", "LUMEN_DICOM_PUSH_URL": ""}):
        assert push.configured_destination(get_settings()) == push.Destination(
            ae_title="ORTHANC", host="pacs.example.org", port=4242
        )


# The task a finished job sends ---------------------------------------------------------------------------------


def _push_messages(prediction_id: int) -> list[str]:
    """`lumen.push_results` messages for this prediction waiting in the broker's cpu queue (taken off it)."""
    found = []
    for stored in broker_redis().lrange(queue_key(PUSH_RESULTS_QUEUE), 0, -1):
        raw = stored.decode() if isinstance(stored, bytes) else stored
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        if message["headers"]["task"] == PUSH_RESULTS_TASK and args == [prediction_id]:
            found.append(raw)
            broker_redis().lrem(queue_key(PUSH_RESULTS_QUEUE), 0, raw)
    return found


def _finish_a_job(*, dicom: bool, out_of_domain: bool = False) -> int:
    """A job claimed by a worker that stored its prediction and finishes it now; the prediction's id."""
    with session_scope() as session:
        if dicom:
            data, header = factories.ct_small()
            stored = factories.insert_study(session, data=data, source_format="dicom", rows=header.Rows,
                                            columns=header.Columns, modality="CT")
        else:
            stored = factories.insert_study(session, data=factories.png_bytes(), source_format="png", rows=48,
                                            columns=64)
        job = factories.add_job(session, stored, state=JobState.queued)
        job_id = job.id
    with session_scope() as session:
        assert jobs_service.claim(session, job_id=job_id, worker="w1")
    with session_scope() as session:
        running = session.get(Job, job_id)
        assert running is not None
        prediction, _ = factories.add_prediction(session, running)
        claim = jobs_service.Claim(job_id=job_id, attempt=1, worker="w1")
        timings = {"out_of_domain": 1.0} if out_of_domain else {"total_s": 1.0}
        assert jobs_service.finish(session, claim=claim, timings=timings)
        assert _push_messages(prediction.id) == []  # nothing before the commit
        return prediction.id


def test_a_job_finished_on_a_dicom_image_sends_the_push_after_commit() -> None:
    with settings_env({"LUMEN_DICOM_PUSH_URL": "http://orthanc.invalid:8042/dicom-web"}):
        prediction_id = _finish_a_job(dicom=True)
    assert len(_push_messages(prediction_id)) == 1


def test_no_push_without_a_destination_for_an_upload_or_outside_the_domain() -> None:
    assert _push_messages(_finish_a_job(dicom=True)) == []
    with settings_env({"LUMEN_DICOM_PUSH_URL": "http://orthanc.invalid:8042/dicom-web"}):
        png = _finish_a_job(dicom=False)
        refused = _finish_a_job(dicom=True, out_of_domain=True)
    assert _push_messages(png) == [] and _push_messages(refused) == []
