"""Search and import from the DICOMweb archive named by LUMEN_ARCHIVE_DICOMWEB_URL (a PACS's /dicom-web, e.g.
Orthanc's), for coordinators assembling reader studies. A study already stored is not fetched again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from dicomweb_client import DICOMwebClient
from pydicom import Dataset
from requests.exceptions import RequestException
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.errors import AppError, Invalid
from app.ingest import service as ingest_service
from app.reader_studies import service as study_service
from app.tables import JobPriority, ReaderStudy, Study

logger = logging.getLogger(__name__)

# QIDO-RS keys a coordinator may search the archive by.
SEARCH_KEYS = ("PatientID", "PatientName", "StudyDate", "ModalitiesInStudy", "AccessionNumber", "StudyDescription",
               "StudyInstanceUID")
MAX_STUDIES = 200


class ArchiveNotConfigured(AppError):
    """409: this Lumen has no archive to search (LUMEN_ARCHIVE_DICOMWEB_URL is unset)."""

    status_code = 409


class ArchiveUnavailable(AppError):
    """502: the archive did not answer, or answered with an error."""

    status_code = 502


@dataclass(frozen=True)
class ArchiveStudy:
    """One study as the archive describes it, and whether Lumen already stores it."""

    study_instance_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    description: str
    modalities: list[str]
    instances: int | None
    stored_study_id: int | None


def _client() -> DICOMwebClient:
    settings = get_settings()
    if not settings.archive_dicomweb_url:
        raise ArchiveNotConfigured(
            "no archive is configured: set LUMEN_ARCHIVE_DICOMWEB_URL to the PACS's DICOMweb URL"
        )
    headers = {"Authorization": settings.archive_authorization} if settings.archive_authorization else None
    return DICOMwebClient(settings.archive_dicomweb_url, headers=headers)


def _first(document: dict[str, Any], tag: str) -> Any:
    values = (document.get(tag) or {}).get("Value") or [None]
    return values[0]


def search(session: Session, *, filters: dict[str, str], limit: int = 50) -> list[ArchiveStudy]:
    """The archive's studies matching `filters` (QIDO-RS), each flagged when Lumen already stores it."""
    unknown = sorted(set(filters) - set(SEARCH_KEYS))
    if unknown:
        raise Invalid(f"cannot search the archive by {', '.join(unknown)}; by {', '.join(SEARCH_KEYS)}")
    try:
        found = _client().search_for_studies(search_filters={k: v for k, v in filters.items() if v},
                                             limit=min(limit, MAX_STUDIES))
    except RequestException as exc:
        raise ArchiveUnavailable(f"the archive did not answer the search: {exc}") from exc
    uids = [str(_first(d, "0020000D")) for d in found]
    rows = session.execute(select(Study.study_instance_uid, Study.id).where(Study.study_instance_uid.in_(uids)))
    stored = {uid: study_id for uid, study_id in rows}
    studies = []
    for document, uid in zip(found, uids, strict=True):
        name = _first(document, "00100010")
        studies.append(ArchiveStudy(
            study_instance_uid=uid,
            patient_name=(name or {}).get("Alphabetic", "") if isinstance(name, dict) else str(name or ""),
            patient_id=str(_first(document, "00100020") or ""),
            study_date=str(_first(document, "00080020") or ""),
            description=str(_first(document, "00081030") or ""),
            modalities=[str(m) for m in (document.get("00080061") or {}).get("Value") or []],
            instances=_first(document, "00201208"),
            stored_study_id=stored.get(uid),
        ))
    return studies


@dataclass(frozen=True)
class Imported:
    """The outcome of an import: studies stored (new or already there), cases added, studies refused and why."""

    study_ids: list[int]
    cases_added: int
    refused: dict[str, str]


def import_studies(session: Session, *, study_uids: list[str], user_id: int, ip: str,
                   reader_study: ReaderStudy | None = None) -> Imported:
    """Fetch each study (WADO-RS) and store its instances as an upload (same checks, jobs at batch priority); then
    add the stored studies to `reader_study`, whose task must read them (its own refusals apply)."""
    if not study_uids:
        raise Invalid("name at least one StudyInstanceUID to import")
    if len(study_uids) > MAX_STUDIES:
        raise Invalid(f"at most {MAX_STUDIES} studies at once")
    client = _client()
    stored: list[int] = []
    refused: dict[str, str] = {}
    for uid in dict.fromkeys(study_uids):
        existing = session.scalar(select(Study.id).where(Study.study_instance_uid == uid))
        if existing is not None:
            stored.append(existing)
            continue
        try:
            # "*": in the transfer syntax the archive holds, as received from the modality (no transcoding, which
            # an archive may not do for JPEG 2000 and which would change nothing Lumen reads).
            datasets = client.retrieve_study(uid, media_types=(("application/dicom", "*"),))
        except RequestException as exc:
            refused[uid] = f"the archive did not return it: {exc}"
            continue
        uploads = [ingest_service.Upload(f"{uid}-{number}.dcm", _part10(dataset))
                   for number, dataset in enumerate(datasets, start=1)]
        if not uploads:
            refused[uid] = "the archive returned no instance"
            continue
        try:
            with session.begin_nested():
                result = ingest_service.ingest(session, uploads=uploads, user_id=user_id, ip=ip,
                                               priority=JobPriority.batch)
        except AppError as exc:
            refused[uid] = str(exc)
            continue
        stored.extend(outcome.study.id for outcome in result.studies)
    added = 0
    if reader_study is not None and stored:
        added = study_service.add_cases(session, study=reader_study, study_ids=list(dict.fromkeys(stored)))
    logger.info("archive import: %d studies stored, %d cases added, %d refused", len(stored), added, len(refused))
    return Imported(study_ids=list(dict.fromkeys(stored)), cases_added=added, refused=refused)


def _part10(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
