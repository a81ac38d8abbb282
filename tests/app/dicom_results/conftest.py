"""A real prediction on a real chest radiograph (data/cxr/RG1_J2KI.dcm: CR, JPEG 2000, MONOCHROME1, no frame of
reference), with a Grad-CAM and a signed integrated-gradients map, as the worker would have stored them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from app.db import session_scope
from app.tables import JobState
from tests.app.reading.conftest import add_heatmap
from tests.app.viewer import factories

CHEST_CR = Path(__file__).resolve().parents[3] / "data" / "cxr" / "RG1_J2KI.dcm"


@dataclass(frozen=True)
class StoredPrediction:
    prediction_id: int
    instance_id: int
    model: str  # "name version"
    source: Dataset  # the source file's header
    maps: dict[str, np.ndarray]  # method -> the map as stored (float16)


def signed_ramp(shape: tuple[int, int]) -> np.ndarray:
    """An integrated-gradients-like signed map: negative at the top, positive at the bottom."""
    return np.linspace(-1.0, 2.0, shape[0] * shape[1], dtype=np.float32).reshape(shape).astype(np.float16)


def store_prediction(path: Path = CHEST_CR, *, referral: bool = True) -> StoredPrediction:
    """The DICOM file stored as a study, a done job, its prediction ("abnormal", 0.83, entropy 0.456) and two maps:
    a Grad-CAM blob (24 x 20) and an integrated-gradients ramp (32 x 30) explaining class 0."""
    data = path.read_bytes()
    header = pydicom.dcmread(path, stop_before_pixels=True)
    gradcam = factories.blob_heatmap((24, 20))
    ig = signed_ramp((32, 30))
    with session_scope() as session:
        stored = factories.insert_study(
            session, data=data, source_format="dicom", rows=header.Rows, columns=header.Columns,
            modality=str(header.Modality), photometric=str(header.PhotometricInterpretation),
        )
        job = factories.add_job(session, stored, state=JobState.done, progress=100)
        prediction, _ = factories.add_prediction(session, job, heatmap=gradcam)
        prediction.mutual_information = 0.0123
        prediction.referral = referral
        add_heatmap(session, prediction.id, method="integrated_gradients", array=ig, target_class=0)
        model = f"{job.model.name} {job.model.version}"
        return StoredPrediction(prediction.id, stored.instance_id, model, header,
                                {"gradcam": gradcam, "integrated_gradients": ig})


def store_png_prediction() -> int:
    """A PNG upload's prediction: no DICOM study to attach results to."""
    with session_scope() as session:
        stored = factories.insert_study(session, data=factories.png_bytes(), source_format="png", rows=48, columns=64)
        job = factories.add_job(session, stored, state=JobState.done, progress=100)
        prediction, _ = factories.add_prediction(session, job)
        return prediction.id


@pytest.fixture(scope="module")
def chest_prediction() -> StoredPrediction:
    return store_prediction()
