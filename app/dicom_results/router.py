"""The DICOM results of a prediction, for download."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.audit.dependencies import ClientIp
from app.auth.dependencies import CanRead
from app.bounds import DbId
from app.db import DbSession
from app.dicom_results import service as dicom_results_service

router = APIRouter(tags=["dicom results"])

_ZIP_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/zip": {}}, "description": "Part 10 files: report, overlay, a map per heatmap"},
    403: {"description": "your role does not see identity, or a reader study hides this image's AI output from you"},
    404: {"description": "no such prediction"},
    422: {"description": "the image is not a single-frame DICOM image (a PNG or JPEG upload has no DICOM study)"},
}


@router.get("/predictions/{prediction_id}/dicom", responses=_ZIP_RESPONSES, response_class=Response)
def download_dicom(prediction_id: DbId, user: CanRead, session: DbSession, ip: ClientIp) -> Response:
    """A zip of the prediction's DICOM objects: Structured Report, Secondary Capture overlay, Parametric Maps."""
    archive = dicom_results_service.dicom_archive(
        session, prediction_id=prediction_id, user_id=user.id, role=user.role, ip=ip
    )
    return Response(archive.content, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{archive.filename}"'})
