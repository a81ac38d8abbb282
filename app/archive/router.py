"""Archive API: coordinators search the configured DICOMweb archive and import studies, as reader-study cases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.archive import service as archive
from app.audit import service as audit
from app.audit.dependencies import ClientIp
from app.auth.dependencies import CanUpload
from app.db import DbSession
from app.reader_studies import service as study_service

router = APIRouter(prefix="/archive", tags=["archive"])
_ERRORS: dict[int | str, dict[str, object]] = {
    422: {"description": "a search key the archive is not searched by, or no study named"},
    409: {"description": "no archive configured"},
    502: {"description": "the archive did not answer"},
}
Text = Annotated[str, Query(max_length=200)]


class ImportIn(BaseModel):
    study_uids: list[Annotated[str, Field(pattern=r"^[0-9.]{1,64}$")]] = Field(min_length=1, max_length=200)
    reader_study_id: int | None = Field(None, ge=1, le=2**31 - 1)


class ImportOut(BaseModel):
    study_ids: list[int]
    cases_added: int
    refused: dict[str, str]


@router.get("/studies", response_model=list[archive.ArchiveStudy], responses=_ERRORS)
def search_archive(
    session: DbSession, _user: CanUpload, PatientID: Text = "", PatientName: Text = "",  # noqa: N803 (DICOM keys)
    StudyDate: Text = "", ModalitiesInStudy: Text = "", AccessionNumber: Text = "",  # noqa: N803
    StudyDescription: Text = "", limit: Annotated[int, Query(ge=1, le=archive.MAX_STUDIES)] = 50,
) -> list[archive.ArchiveStudy]:
    """The archive's studies matching the keys (DICOM wildcards and date ranges as the archive takes them)."""
    filters = {"PatientID": PatientID, "PatientName": PatientName, "StudyDate": StudyDate,
               "ModalitiesInStudy": ModalitiesInStudy, "AccessionNumber": AccessionNumber,
               "StudyDescription": StudyDescription}
    return archive.search(session, filters={k: v for k, v in filters.items() if v}, limit=limit)


@router.post("/import", response_model=ImportOut, responses={**_ERRORS, 404: {"description": "no such reader study"}})
def import_from_archive(body: ImportIn, session: DbSession, user: CanUpload, ip: ClientIp) -> ImportOut:
    """Fetch the studies from the archive and store them as uploads; with a draft reader study, add them as cases."""
    reader_study = (study_service.get_study(session, reader_study_id=body.reader_study_id)
                    if body.reader_study_id is not None else None)
    outcome = archive.import_studies(session, study_uids=body.study_uids, user_id=user.id, ip=ip,
                                     reader_study=reader_study)
    audit.record(session, action="archive.import", user_id=user.id, object_type="reader_study",
                 object_id=body.reader_study_id or "", ip=ip,
                 detail={"studies": len(outcome.study_ids), "refused": len(outcome.refused)})
    return ImportOut(study_ids=outcome.study_ids, cases_added=outcome.cases_added, refused=outcome.refused)
