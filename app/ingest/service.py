"""Bring files in: check every file, then write blobs, then rows; plan AI jobs; audit. All or nothing.

Rules:
- DICOM instances are grouped by StudyInstanceUID / SeriesInstanceUID (rows created or reused).
- PNG/JPEG images of one upload form one new study and series with generated UIDs. They carry no header, so
  the upload names their modality and body part (`ImageOrigin`); a colour photograph defaults to a fundus
  photograph (OP, EYE), the only colour images Lumen's models read; a grayscale image has no default: 422.
- Same SOPInstanceUID and same bytes: the stored instance is returned as a duplicate (no new job). Same
  SOPInstanceUID, other bytes: 409. PNG/JPEG have no UID of their own: the same bytes make a duplicate.
- A refused upload stores nothing: the first bad file raises IngestError before any blob or row is written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PureWindowsPath
from typing import BinaryIO

from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.config import get_settings
from app.db import session_scope
from app.ingest import previews as ingest_previews
from app.ingest.errors import IngestError
from app.ingest.files import Candidate, SeriesInfo, StudyInfo, inspect_file
from app.jobs import service as jobs_service
from app.storage import get_blob_store
from app.tables import Instance, JobPriority, Series, Study

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_MODALITY = "OP"
DEFAULT_IMAGE_BODY_PART = "EYE"
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")
# DICOM BodyPartExamined is a code string: upper case, digits, space and underscore, at most 16 characters.
_BODY_PART = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_READ_CHUNK = 1024 * 1024


@dataclass
class StudyOutcome:
    """One study touched by an upload: its instances from this upload (with the duplicate flag) and new jobs."""

    study: Study
    instances: list[tuple[Instance, bool]] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)


@dataclass
class IngestResult:
    studies: list[StudyOutcome]


@dataclass(frozen=True)
class Upload:
    filename: str  # as sent, or "file 3" in messages where the upload named none (`named` False)
    data: bytes
    named: bool = True


def own_name(filename: str) -> str:
    """The file's own name, as instances.source_filename keeps it: without the folders some clients send
    ("C:\\scans\\fundus.png" or "scans/fundus.png" -> "fundus.png"), printable characters only, at most 255."""
    name = "".join(character for character in PureWindowsPath(filename.strip()).name if character.isprintable())
    return name[:255]


@dataclass(frozen=True)
class ImageOrigin:
    """What the upload says of its PNG/JPEG images (DICOM files say it in their headers): the modality and the
    body part, as DICOM codes (e.g. CR and CHEST, OP and EYE); None where the upload left it out."""

    modality: str | None = None
    body_part: str | None = None

    def checked(self) -> ImageOrigin:
        """Upper-cased and checked; IngestError 422 naming the field that is not a DICOM code."""
        modality = _code(self.modality, _MODALITY, "modality", "1-16 upper-case letters or digits, e.g. CR or OP")
        body_part = _code(self.body_part, _BODY_PART, "body_part", "1-16 upper-case letters, digits or _, e.g. CHEST")
        return ImageOrigin(modality, body_part)

    def of(self, candidate: Candidate) -> tuple[str, str]:
        """The modality and body part of one image: as sent, or the fundus default for a colour photograph sent
        without them. IngestError 422 naming the missing field where no default fits (a grayscale image: a
        radiograph, a scan, anything but a fundus photograph)."""
        colour = candidate.instance.samples_per_pixel == 3
        modality = self.modality or (DEFAULT_IMAGE_MODALITY if colour else None)
        if modality is None:
            raise IngestError(
                422,
                f"{candidate.filename}: a grayscale image needs its modality: send the field 'modality' (e.g. CR or "
                "DX for a radiograph) and 'body_part' (e.g. CHEST); only colour photographs default to fundus (OP)",
            )
        body_part = self.body_part or (DEFAULT_IMAGE_BODY_PART if modality == DEFAULT_IMAGE_MODALITY else None)
        if body_part is None:
            raise IngestError(
                422, f"{candidate.filename}: a {modality} image needs its body part: send the field 'body_part' "
                "(e.g. CHEST); only fundus photographs (OP) default to EYE",
            )
        return modality, body_part


def _code(value: str | None, pattern: re.Pattern[str], field_name: str, expected: str) -> str | None:
    if value is None or value.strip() == "":
        return None
    code = value.strip().upper()
    if not pattern.match(code):
        raise IngestError(422, f"{field_name} {value.strip()[:20]!r} must be {expected}")
    return code


def ingest_upload(
    session: Session,
    *,
    files: Sequence[tuple[str | None, BinaryIO]],
    user_id: int | None,
    origin: ImageOrigin | None = None,
    ip: str = "",
    priority: JobPriority | None = None,
) -> IngestResult:
    """Read the uploaded files (within the size cap) and ingest them as one unit."""
    try:
        uploads = read_uploads(files=files, max_bytes=get_settings().max_upload_bytes)
        return ingest(session, uploads=uploads, user_id=user_id, origin=origin, ip=ip, priority=priority)
    except IngestError as exc:
        logger.info("upload refused (%s): %s", exc.status, exc.reason)
        raise


def read_uploads(*, files: Sequence[tuple[str | None, BinaryIO]], max_bytes: int) -> list[Upload]:
    """The files' bytes; 400 for none, 413 as soon as the upload passes `max_bytes` in total."""
    if not files:
        raise IngestError(400, "no files in the upload (send them in the multipart field 'files')")
    uploads: list[Upload] = []
    total = 0
    for number, (name, handle) in enumerate(files, start=1):
        filename = name or f"file {number}"
        chunks: list[bytes] = []
        while chunk := handle.read(_READ_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise IngestError(413, f"{filename}: the upload is larger than the limit of {max_bytes} bytes")
            chunks.append(chunk)
        uploads.append(Upload(filename, b"".join(chunks), named=bool(name)))
    return uploads


def ingest(
    session: Session, *, uploads: Sequence[Upload], user_id: int | None, origin: ImageOrigin | None = None,
    ip: str = "", priority: JobPriority | None = None,
) -> IngestResult:
    """Check every file, then store blobs and rows, plan jobs and audit, per study. The jobs' priority: as
    given, else interactive for a signed-in user's upload and batch for an import without one."""
    if not uploads:
        raise IngestError(400, "no files in the upload")
    stated = (origin or ImageOrigin()).checked()
    candidates = _unique([_with_origin(_inspected(upload), stated) for upload in uploads])
    duplicates = _find_duplicates(session, candidates=candidates)
    new = [c for c in candidates if c.sha256 not in duplicates]
    _check_series_owners(session, candidates=[c for c in new if c.series is not None])
    store = get_blob_store()
    # Blobs before rows: a row never points at a missing blob. A failure after this leaves unreferenced,
    # content-addressed blobs, which a re-upload reuses.
    keys = {c.sha256: store.put(c.sha256, c.data) for c in new}
    _store_previews(candidates)
    stored = _add_rows(session, candidates=new, keys=keys, user_id=user_id)
    outcomes: dict[int, StudyOutcome] = {}
    job_priority = priority if priority is not None else (
        JobPriority.interactive if user_id is not None else JobPriority.batch
    )
    for candidate in candidates:
        is_duplicate = candidate.sha256 in duplicates
        instance = duplicates[candidate.sha256] if is_duplicate else stored[candidate.sha256]
        study = instance.series.study
        outcomes.setdefault(study.id, StudyOutcome(study=study)).instances.append((instance, is_duplicate))
    for outcome in outcomes.values():
        created = [instance for instance, is_duplicate in outcome.instances if not is_duplicate]
        jobs = (
            jobs_service.plan_jobs(session, study_id=outcome.study.id, instances=created, priority=job_priority)
            if created
            else []
        )
        outcome.job_ids = [job.id for job in jobs]
        audit_service.record(
            session,
            action="upload",
            user_id=user_id,
            object_type="study",
            object_id=outcome.study.id,
            ip=ip,
            detail={"new_instances": len(created), "duplicates": len(outcome.instances) - len(created)},
        )
    logger.info("ingested %d new, %d duplicate instance(s)", len(new), len(candidates) - len(new))
    return IngestResult(studies=list(outcomes.values()))


def _store_previews(candidates: list[Candidate]) -> None:
    # Duplicates too: a file stored before previews were made at ingest gets its preview now.
    for candidate in candidates:
        if candidate.preview is not None:
            ingest_previews.store_preview(sha256=candidate.sha256, png=candidate.preview)


def import_path(path: Path, *, origin: ImageOrigin | None = None, priority: JobPriority = JobPriority.batch) -> str:
    """Import one file for `lumen import`; a one-line outcome ("stored ...", "duplicate ...", "refused: ...")."""
    try:
        with path.open("rb") as handle, session_scope() as session:
            result = ingest_upload(
                session, files=[(path.name, handle)], user_id=None, origin=origin, priority=priority
            )
            outcome = result.studies[0]
            instance, duplicate = outcome.instances[0]
            line = (
                f"duplicate of instance {instance.id}"
                if duplicate
                else f"stored study {outcome.study.study_instance_uid} instance {instance.id}"
            )
    except IngestError as exc:
        return f"refused: {exc.reason}"
    except OSError as exc:
        return f"refused: cannot read {path.name}: {exc.strerror or exc}"
    return line


def _inspected(upload: Upload) -> Candidate:
    """The checked file, with its own name to store (a duplicate keeps the name it was first stored with)."""
    candidate = inspect_file(filename=upload.filename, data=upload.data)
    name = own_name(upload.filename) if upload.named else ""
    return replace(candidate, instance=replace(candidate.instance, source_filename=name))


def _with_origin(candidate: Candidate, origin: ImageOrigin) -> Candidate:
    """A PNG/JPEG candidate with the modality and body part the upload gives it (DICOM: unchanged)."""
    if candidate.study is not None:
        return candidate
    modality, body_part = origin.of(candidate)
    return replace(candidate, instance=replace(candidate.instance, modality=modality), body_part=body_part)


def _unique(candidates: list[Candidate]) -> list[Candidate]:
    """The same file twice in one upload counts once; two different files with one SOPInstanceUID are a 409."""
    by_sha: dict[str, Candidate] = {}
    by_sop: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.sha256 in by_sha:
            continue
        sop = candidate.instance.sop_instance_uid
        if sop and sop in by_sop:
            raise IngestError(
                409, f"{candidate.filename}: SOPInstanceUID {sop} is also in {by_sop[sop].filename}, with other content"
            )
        by_sha[candidate.sha256] = candidate
        if sop:
            by_sop[sop] = candidate
    return list(by_sha.values())


def _find_duplicates(session: Session, *, candidates: list[Candidate]) -> dict[str, Instance]:
    """Stored instances equal to candidates, by sha256; 409 for a stored SOPInstanceUID with other bytes."""
    sops = [c.instance.sop_instance_uid for c in candidates if c.source_format == "dicom"]
    images = [c.sha256 for c in candidates if c.source_format != "dicom"]
    stored: dict[str, list[Instance]] = {}
    if sops:
        for row in session.scalars(select(Instance).where(Instance.sop_instance_uid.in_(sops))):
            stored.setdefault(row.sop_instance_uid, []).append(row)
    duplicates: dict[str, Instance] = {}
    if images:
        found = session.scalars(
            select(Instance).where(Instance.sha256.in_(images), Instance.source_format != "dicom").order_by(Instance.id)
        )
        for row in found:
            duplicates.setdefault(row.sha256, row)
    for candidate in candidates:
        rows = stored.get(candidate.instance.sop_instance_uid, []) if candidate.source_format == "dicom" else []
        same = next((row for row in rows if row.sha256 == candidate.sha256), None)
        if same is not None:
            duplicates[candidate.sha256] = same
        elif rows:
            raise IngestError(
                409,
                f"{candidate.filename}: SOPInstanceUID {candidate.instance.sop_instance_uid} is already stored "
                f"(instance {rows[0].id}) with other content",
            )
    return duplicates


def _check_series_owners(session: Session, *, candidates: list[Candidate]) -> None:
    """409 when a SeriesInstanceUID is already used by another study (in the database or in this upload)."""
    owner: dict[str, tuple[str, str]] = {}
    for c in candidates:
        assert c.series is not None and c.study is not None
        uid, study_uid = c.series.series_instance_uid, c.study.study_instance_uid
        if owner.setdefault(uid, (study_uid, c.filename))[0] != study_uid:
            raise IngestError(409, f"{c.filename}: series {uid} is in two studies of this upload")
    if not owner:
        return
    rows = session.execute(
        select(Series.series_instance_uid, Study.study_instance_uid)
        .join(Study, Series.study_id == Study.id)
        .where(Series.series_instance_uid.in_(list(owner)))
    )
    for series_uid, study_uid in rows:
        if owner[series_uid][0] != study_uid:
            raise IngestError(
                409, f"{owner[series_uid][1]}: series {series_uid} already belongs to another study ({study_uid})"
            )


def _add_rows(
    session: Session, *, candidates: list[Candidate], keys: dict[str, str], user_id: int | None
) -> dict[str, Instance]:
    """Study, series and instance rows of the new files, flushed; the new instances by sha256."""
    image_study, image_series = _image_study_and_series(candidates)
    studies: dict[str, Study] = {}
    series_rows: dict[str, Series] = {}
    stored: dict[str, Instance] = {}
    try:
        # No autoflush while rows are half built: the one flush below is where a racing upload shows.
        with session.no_autoflush:
            for c in candidates:
                study_info, series_info = c.study or image_study, c.series or image_series
                assert study_info is not None and series_info is not None
                uid = study_info.study_instance_uid
                generated = c.study is None
                study = studies.get(uid) or _study_row(session, info=study_info, user_id=user_id, generated=generated)
                studies[uid] = study
                uid = series_info.series_instance_uid
                series = series_rows.get(uid) or _series_row(session, info=series_info, study=study)
                series_rows[uid] = series
                fields = asdict(c.instance)
                fields["sop_instance_uid"] = fields["sop_instance_uid"] or generate_uid()
                instance = Instance(**fields, storage_key=keys[c.sha256], sha256=c.sha256, size_bytes=len(c.data))
                series.instances.append(instance)
                stored[c.sha256] = instance
            for study in studies.values():
                study.modality = _joined_modalities(study)
        session.flush()
    except IntegrityError as exc:
        # Two uploads of the same study raced past the checks; on retry this one finds duplicates.
        raise IngestError(409, "another upload stored some of these files at the same time; try again") from exc
    return stored


def _image_study_and_series(candidates: list[Candidate]) -> tuple[StudyInfo | None, SeriesInfo | None]:
    images = [c for c in candidates if c.study is None]
    if not images:
        return None, None
    modality, body_part = images[0].instance.modality, images[0].body_part
    description = (
        "Fundus photographs" if (modality, body_part) == (DEFAULT_IMAGE_MODALITY, DEFAULT_IMAGE_BODY_PART)
        else f"{modality} {body_part.lower()} images"
    )
    study = StudyInfo(study_instance_uid=generate_uid(), description=description)
    series = SeriesInfo(series_instance_uid=generate_uid(), modality=modality, body_part=body_part,
                        description=description)
    return study, series


def _study_row(session: Session, *, info: StudyInfo, user_id: int | None, generated: bool) -> Study:
    """The stored study of this UID, or a new one (`generated`: the UID was made here, no query)."""
    existing = (
        None if generated else session.scalar(select(Study).where(Study.study_instance_uid == info.study_instance_uid))
    )
    if existing is not None:
        return existing
    study = Study(**asdict(info), uploaded_by_id=user_id)
    session.add(study)
    return study


def _series_row(session: Session, *, info: SeriesInfo, study: Study) -> Series:
    """The stored series of this UID, or a new one in `study`."""
    existing = session.scalar(select(Series).where(Series.series_instance_uid == info.series_instance_uid))
    if existing is not None:
        return existing
    series = Series(**asdict(info))
    study.series.append(series)
    return series


def _joined_modalities(study: Study) -> str:
    # "Modalities of its series, joined": sorted, "/"-separated, within the 16-character column.
    return "/".join(sorted({s.modality for s in study.series if s.modality}))[:16]
