"""Who may download a prediction's DICOM results, and the zip they get."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from pydicom import Dataset, dcmwrite
from pydicom.uid import ParametricMapStorage
from sqlalchemy.orm import Session

from app import visibility
from app.audit import service as audit_service
from app.dicom_results import objects
from app.errors import Forbidden, NotFound
from app.tables import Prediction, Role


@dataclass(frozen=True)
class Archive:
    filename: str
    content: bytes


def dicom_archive(session: Session, *, prediction_id: int, user_id: int, role: Role, ip: str) -> Archive:
    """The prediction's DICOM objects as a zip of Part 10 files, for a caller who may see them; audited as an export.

    Forbidden for a role that does not see identity (the objects carry the patient module of the source image) and
    while a reader study hides the model's output of the image from the caller; NotFound for an unknown
    prediction; Invalid when its image is not DICOM. Heatmaps a reader-study condition hides are left out.
    """
    if not visibility.sees_identity(role):
        raise Forbidden(f"DICOM results carry the patient's identity (the source image's patient module), which the "
                        f"{role.value} role does not see")
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise NotFound(f"prediction {prediction_id} does not exist")
    allowance = visibility.check_prediction(session, user_id=user_id, instance_id=prediction.instance_id)
    methods = None if allowance is None else {h.method for h in prediction.heatmaps if allowance.heatmap(h.method)}
    results = objects.results_for_prediction(session, prediction_id, methods=methods)
    audit_service.record_when_read(
        session, action="export", user_id=user_id, object_type="prediction", object_id=prediction_id, ip=ip,
        detail={"format": "dicom", "instance_id": prediction.instance_id, "objects": len(results)},
    )
    return Archive(filename=f"prediction-{prediction_id}-dicom.zip", content=zipped(results))


def zipped(datasets: list[Dataset]) -> bytes:
    """Part 10 files (preamble, file meta) in a zip, named by order and kind: 01-report.dcm, 02-overlay.dcm, ..."""
    buffer = io.BytesIO()
    # Level 1: float maps barely shrink, and a radiograph's maps are tens of MB.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for number, dataset in enumerate(datasets, start=1):
            archive.writestr(f"{number:02d}-{file_stem(dataset)}.dcm", part10(dataset))
    return buffer.getvalue()


def file_stem(dataset: Dataset) -> str:
    """'report', 'overlay', or 'map-<method>'."""
    if dataset.SOPClassUID == ParametricMapStorage:
        return f"map-{objects.map_method(dataset)}"
    return "report" if dataset.Modality == "SR" else "overlay"


def part10(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()
