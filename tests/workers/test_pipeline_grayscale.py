"""The worker reads grayscale DICOM as the model card says: decoder rescale, the file's photometric and VOI LUT
Module handed to preprocessing, MONOCHROME1 inverted, then normalised. Real file, real model, real Postgres."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.storage import get_blob_store
from app.tables import AiModel, Instance, Job, JobState, Prediction, Series, Study
from models.grayscale import Voi, Window
from workers import pipeline

SIZE = 128  # the cxr-demo model's input size: no resampling, so every input value is known
SLOPE, INTERCEPT = 2.0, -1000.0
CENTER, WIDTH = 1000.0, 2000.0  # the file's own window (LINEAR, no VOI LUT Function named): about [0, 2000] -> [0, 1]
# Four vertical bands of stored values; what the network must see for each is pydicom's, roughly:
# stored -> modality (x 2 - 1000) -> window -> MONOCHROME1 inverted.
# 0 -> -1000 -> 0 -> 1; 1000 -> 1000 -> ~0.5 -> ~0.5; 1250 -> 1500 -> ~0.75 -> ~0.25; 3000 -> 5000 -> 1 -> 0.
BANDS_STORED = [0, 1000, 1250, 3000]


def _stored() -> np.ndarray:
    stored = np.zeros((SIZE, SIZE), np.uint16)
    for index, value in enumerate(BANDS_STORED):
        stored[:, index * SIZE // 4 : (index + 1) * SIZE // 4] = value
    return stored


def _monochrome1_dicom(stored: np.ndarray) -> bytes:
    """A 16-bit MONOCHROME1 radiograph with a rescale slope/intercept and a VOI window in its header."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = str(SLOPE), str(INTERCEPT)
    ds.WindowCenter, ds.WindowWidth = str(CENTER), str(WIDTH)
    ds.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _cxr_job(data: bytes) -> int:
    """A stored DICOM and a job for the cxr-demo model (listed, not served automatically: asked for here)."""
    models_sync.sync_now()
    sha = hashlib.sha256(data).hexdigest()
    key = get_blob_store().put(sha, data)
    with session_scope() as session:
        model = session.scalar(select(AiModel).where(AiModel.name == "cxr-demo", AiModel.is_active.is_(True)))
        assert model is not None
        study = Study(study_instance_uid=generate_uid(), modality="DX")
        series = Series(study=study, series_instance_uid=generate_uid(), modality="DX")
        # As ingest records it (app.ingest.files): the photometric and the header's window.
        instance = Instance(
            series=series,
            sop_instance_uid=generate_uid(),
            source_format="dicom",
            modality="DX",
            rows=SIZE,
            columns=SIZE,
            bits_stored=16,
            photometric="MONOCHROME1",
            window_center=CENTER,
            window_width=WIDTH,
            storage_key=key,
            sha256=sha,
            size_bytes=len(data),
        )
        job = Job(study=study, instance=instance, model_id=model.id, methods=["gradcam"], queue="gpu")
        session.add(job)
        session.flush()
        return job.id


@pytest.fixture
def prepared(monkeypatch):
    """Record what the pipeline hands to preprocessing, and the input the network gets."""
    calls: list[dict] = []
    real = pipeline.prepare_with_region

    def spy(image, card, **kwargs):
        x, region = real(image, card, **kwargs)
        calls.append({"image": image, "card": card, "x": x, **kwargs})
        return x, region

    monkeypatch.setattr(pipeline, "prepare_with_region", spy)
    return calls


def test_the_pipeline_hands_the_files_photometric_and_window_to_preprocessing(prepared) -> None:
    stored = _stored()
    job_id = _cxr_job(_monochrome1_dicom(stored))
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    [call] = prepared
    assert call["photometric"] == "MONOCHROME1"
    assert call["voi"] == Voi(windows=(Window(CENTER, WIDTH, "LINEAR", "Header"),))
    # The decoder applied the rescale slope/intercept and did not invert: modality units as stored.
    np.testing.assert_array_equal(call["image"], stored.astype(np.float32) * SLOPE + INTERCEPT)
    # The card's own windowing (percentile, MONOCHROME1 inverted): the darkest stored band is the brightest input.
    spec = call["card"].input
    assert spec.windowing == "percentile" and spec.invert_monochrome1
    x = call["x"][0, 0]
    assert x[:, 0].mean() > x[:, -1].mean()
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.state == JobState.done
        # Four flat bands look like no radiograph: cxr-demo's input-domain gate, which sees the same prepared
        # input, refuses them, and no prediction is stored (models/ood.py).
        assert job.timings["out_of_domain"] == 1.0 and job.timings["ood_score"] > job.timings["ood_threshold"]
        assert session.query(Prediction).filter_by(job_id=job_id).count() == 0


def test_a_card_that_asks_for_the_files_window_gets_it(prepared, monkeypatch) -> None:
    real = pipeline.model_cache.get_model

    def with_dicom_window(name: str, version: str):
        model, card = real(name, version)
        return model, dataclasses.replace(card, input=dataclasses.replace(card.input, windowing="dicom"))

    monkeypatch.setattr(pipeline.model_cache, "get_model", with_dicom_window)
    data = _monochrome1_dicom(_stored())
    job_id = _cxr_job(data)
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done
    [call] = prepared
    mean, std = call["card"].input.mean[0], call["card"].input.std[0]
    # pydicom's own modality LUT and VOI LUT on the file; its output spans the rescaled 16-bit range.
    ds = pydicom.dcmread(io.BytesIO(data))
    shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    low, high = 0 * SLOPE + INTERCEPT, 65535 * SLOPE + INTERCEPT
    unit = 1.0 - (shown - low) / (high - low)  # MONOCHROME1 inverted
    expected = torch.from_numpy(((unit - mean) / std).astype(np.float32))
    torch.testing.assert_close(call["x"][0, 0].cpu(), expected)
    assert expected[0, 0] == pytest.approx((1.0 - mean) / std) and expected[0, SIZE - 1] == pytest.approx(-mean / std)
