"""Studies JSON API: upload DICOM / PNG / JPEG files, the worklist, one study."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from app.audit.dependencies import ClientIp
from app.auth.dependencies import CanRead, CanUpload
from app.bounds import FreeText, Index
from app.db import DbSession
from app.ingest import service as ingest_service
from app.studies import service as studies_service
from app.studies.dependencies import StudyOr404
from app.studies.schemas import StudyOut, StudySummary, UploadOut

router = APIRouter(prefix="/studies", tags=["studies"])

_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "no files, or an empty file"},
    409: {"description": "a different file with a stored SOPInstanceUID"},
    413: {"description": "larger than the upload limit"},
    415: {"description": "not DICOM, PNG or JPEG"},
    422: {"description": "unreadable header, no image, or undecodable pixels"},
}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UploadOut, responses=_UPLOAD_ERRORS)
def upload_studies(
    session: DbSession,
    user: CanUpload,
    ip: ClientIp,
    files: Annotated[list[UploadFile] | None, File(description="DICOM, PNG or JPEG files")] = None,
    modality: Annotated[
        FreeText | None,
        Form(description="DICOM modality of the PNG/JPEG images, e.g. CR, DX or OP; colour photographs default to OP, "
             "grayscale images must say"),
    ] = None,
    body_part: Annotated[
        FreeText | None,
        Form(description="DICOM body part of the PNG/JPEG images, e.g. CHEST or EYE; OP defaults to EYE, other "
             "modalities must say"),
    ] = None,
) -> UploadOut:
    """Store the files (all or none) and plan AI jobs; the first study touched, and all of them."""
    result = ingest_service.ingest_upload(
        session,
        files=[(upload.filename, upload.file) for upload in files or []],
        user_id=user.id,
        origin=ingest_service.ImageOrigin(modality=modality, body_part=body_part),
        ip=ip,
    )
    return studies_service.upload_out(result, role=user.role)


@router.get("", response_model=list[StudySummary])
def list_studies(
    session: DbSession,
    user: CanRead,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[Index, Query()] = 0,
) -> list[StudySummary]:
    """Studies newest first, with their number of instances (UIDs and descriptions only for roles that see
    identity)."""
    return studies_service.list_studies(session, role=user.role, limit=limit, offset=offset)


@router.get("/{study_id}", response_model=StudyOut, responses={404: {"description": "no such study"}})
def get_study(user: CanRead, study: StudyOr404, session: DbSession, ip: ClientIp) -> StudyOut:
    """One study with all its instances and job ids (UIDs only for roles that see identity); audited."""
    return studies_service.study_detail(session, study=study, user=user, ip=ip)
