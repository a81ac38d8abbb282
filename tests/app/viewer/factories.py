"""Rows for viewer tests: a stored study with one instance and, on request, a job, prediction and heatmap.

The real ingest and worker paths have their own tests; here rows are arranged directly.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEGBaseline8Bit, generate_uid
from sqlalchemy.orm import Session

from app.storage import get_blob_store
from app.tables import AiModel, Heatmap, Instance, Job, JobState, Prediction, Series, Study
from app.viewer import colour

LABELS = ["normal", "abnormal"]
# IDRiD_01.jpg (4288 x 2848, CC BY 4.0) wrapped unchanged as an Ophthalmic Photography DICOM (DATA_LICENSES.md).
IDRID_01_DICOM = Path(__file__).resolve().parents[3] / "demo" / "IDRiD_01_OP_jpegbaseline.dcm"
_OPHTHALMIC_PHOTOGRAPHY_8_BIT = UID("1.2.840.10008.5.1.4.1.1.77.1.5.1")


@dataclass(frozen=True)
class StoredStudy:
    study_id: int
    instance_id: int
    job_id: int | None = None
    prediction_id: int | None = None
    heatmap_id: int | None = None


def png_bytes(*, width: int = 64, height: int = 48) -> bytes:
    """A grayscale gradient PNG (real PNG bytes, decoded by Pillow like any upload)."""
    ramp = np.linspace(0, 255, width * height, dtype=np.float32).reshape(height, width)
    buffer = io.BytesIO()
    Image.fromarray(ramp.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def ct_small() -> tuple[bytes, pydicom.Dataset]:
    """pydicom's own CT_small.dcm (128x128 CT, MONOCHROME2), shipped in its wheel: a real DICOM file."""
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    with open(path, "rb") as handle:
        data = handle.read()
    return data, pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def pristine_idrid_01(data_dir: Path | None = None) -> bytes:
    """IDRiD_01.jpg as published: from a data folder's idrid/pristine/ when given, else the JPEG stream that
    demo/IDRiD_01_OP_jpegbaseline.dcm wraps (the same bytes)."""
    if data_dir is not None:
        return (data_dir / "idrid" / "pristine" / "IDRiD_01.jpg").read_bytes()
    jpeg = colour.encapsulated_jpeg(pydicom.dcmread(IDRID_01_DICOM), frame=0)
    assert jpeg is not None
    return jpeg


def photograph_dicom(jpeg: bytes) -> bytes:
    """A baseline JPEG wrapped unchanged (pydicom `encapsulate`) as an Ophthalmic Photography 8 Bit DICOM (a VL
    Photographic Image): YBR_FULL_422, modality OP, body part EYE, new UIDs."""
    with Image.open(io.BytesIO(jpeg)) as image:
        width, height = image.size
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = _OPHTHALMIC_PHOTOGRAPHY_8_BIT
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ImageLaterality = "OP", "EYE", "U"
    ds.PatientName, ds.PatientID, ds.StudyDate = "Fundus^Bench", f"P-{secrets.token_hex(3)}", "20240131"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.Rows, ds.Columns = height, width
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def insert_study(
    session: Session,
    *,
    data: bytes,
    source_format: str,
    rows: int,
    columns: int,
    modality: str = "OT",
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    patient_name: str = "Doe^Jane",
    description: str = "Test study",
) -> StoredStudy:
    """A study > series > instance with its blob in the blob store."""
    sha = hashlib.sha256(data).hexdigest()
    key = get_blob_store().put(sha, data)
    study = Study(
        study_instance_uid=f"2.25.{secrets.randbits(96)}",
        modality=modality,
        description=description,
        study_date="20240131",
        patient_name=patient_name,
        patient_id=f"P-{secrets.token_hex(3)}",
    )
    series = Series(series_instance_uid=f"2.25.{secrets.randbits(96)}", modality=modality, number=1)
    instance = Instance(
        sop_instance_uid=f"2.25.{secrets.randbits(96)}",
        source_format=source_format,
        modality=modality,
        number=1,
        frames=frames,
        rows=rows,
        columns=columns,
        photometric=photometric,
        storage_key=key,
        sha256=sha,
        size_bytes=len(data),
    )
    series.instances.append(instance)
    study.series.append(series)
    session.add(study)
    session.flush()
    return StoredStudy(study_id=study.id, instance_id=instance.id)


def add_model(session: Session) -> AiModel:
    """An inactive model for a modality no upload has: other tests' uploads never plan jobs on it."""
    model = AiModel(
        name="test-net",
        version=secrets.token_hex(3),
        task="classification",
        labels=LABELS,
        modalities=["ZZ"],
        input_spec={},
        weights_sha256="0" * 64,
        card={},
        is_active=False,
    )
    session.add(model)
    session.flush()
    return model


def add_job(session: Session, stored: StoredStudy, *, state: JobState, progress: int = 0, error: str = "") -> Job:
    model = add_model(session)
    job = Job(
        study_id=stored.study_id,
        instance_id=stored.instance_id,
        model_id=model.id,
        methods=["gradcam"],
        state=state,
        progress=progress,
        error=error,
        sent_at=datetime.now(UTC),
    )
    session.add(job)
    session.flush()
    return job


def blob_heatmap(shape: tuple[int, ...] = (16, 16)) -> np.ndarray:
    """A Gaussian blob centred a little up and left: a plausible GradCAM map."""
    height, width = shape[-2:]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    blob = np.exp(-(((y - height * 0.4) / (height * 0.2)) ** 2 + ((x - width * 0.4) / (width * 0.2)) ** 2))
    return np.broadcast_to(blob, shape).astype(np.float16)


def add_prediction(session: Session, job: Job, *, heatmap: np.ndarray | None = None) -> tuple[Prediction, Heatmap]:
    """A finished job's prediction ("abnormal", 0.83) with a stored float16 GradCAM heatmap."""
    assert job.instance_id is not None
    prediction = Prediction(
        job_id=job.id,
        instance_id=job.instance_id,
        model_id=job.model_id,
        probabilities=[0.17, 0.83],
        label="abnormal",
        label_index=1,
        predictive_entropy=0.456,
    )
    session.add(prediction)
    session.flush()
    array = blob_heatmap() if heatmap is None else heatmap.astype(np.float16)
    row = Heatmap(
        prediction_id=prediction.id,
        method="gradcam",
        target_class=1,
        shape=list(array.shape),
        dtype="float16",
        data=array.tobytes(),
        value_min=float(array.min()),
        value_max=float(array.max()),
    )
    session.add(row)
    session.flush()
    return prediction, row


def done_study(session: Session, **fields: object) -> StoredStudy:
    """A CT_small study whose job is done, with a prediction and a heatmap."""
    data, header = ct_small()
    stored = insert_study(
        session, data=data, source_format="dicom", rows=header.Rows, columns=header.Columns, modality="CT", **fields
    )
    job = add_job(session, stored, state=JobState.done, progress=100)
    prediction, heatmap = add_prediction(session, job)
    return StoredStudy(stored.study_id, stored.instance_id, job.id, prediction.id, heatmap.id)
