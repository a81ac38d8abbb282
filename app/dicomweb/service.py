"""DICOMweb's rules on Lumen's store: the attributes each level answers with, matching, retrieval and storing.

Only instances stored as DICOM are DICOM objects: a PNG or JPEG upload is no SOP instance, so QIDO-RS does not
list it and WADO-RS cannot return it (the viewer's own routes show it). Searches match as PS3.4 C.2.2.2 says
for the attributes Lumen keeps: single values and lists of UIDs exactly, `*` and `?` wildcards, date ranges
(`20240101-20241231`, open at either end), case-insensitive for person names; other query keys are refused
with their name rather than silently ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, and_, func, literal, or_, select
from sqlalchemy.orm import Session

from app.errors import AppError, Invalid, NotFound
from app.ingest import pixels
from app.ingest import service as ingest_service
from app.storage import get_blob_store
from app.tables import Instance, Series, Study

logger = logging.getLogger(__name__)

DICOM = "dicom"
MAX_LIMIT = 1000

# Query key (keyword or tag) -> (tag, the column it matches, kind). Kinds: uid (exact, a list allowed), text
# (wildcards), name (wildcards, case-insensitive), date (ranges).
Column = Any
_STUDY_KEYS: dict[str, tuple[str, Column, str]] = {
    "StudyInstanceUID": ("0020000D", Study.study_instance_uid, "uid"),
    "PatientName": ("00100010", Study.patient_name, "name"),
    "PatientID": ("00100020", Study.patient_id, "text"),
    "AccessionNumber": ("00080050", Study.accession_number, "text"),
    "StudyDate": ("00080020", Study.study_date, "date"),
    "StudyDescription": ("00081030", Study.description, "text"),
    "ModalitiesInStudy": ("00080061", Study.modality, "modalities"),
}
_SERIES_KEYS: dict[str, tuple[str, Column, str]] = {
    "SeriesInstanceUID": ("0020000E", Series.series_instance_uid, "uid"),
    "Modality": ("00080060", Series.modality, "text"),
    "SeriesDescription": ("0008103E", Series.description, "text"),
    "BodyPartExamined": ("00180015", Series.body_part, "text"),
}
_INSTANCE_KEYS: dict[str, tuple[str, Column, str]] = {
    "SOPInstanceUID": ("00080018", Instance.sop_instance_uid, "uid"),
    "SOPClassUID": ("00080016", Instance.sop_class_uid, "uid"),
}
_PAGING = {"limit", "offset", "includefield", "fuzzymatching"}


@dataclass(frozen=True)
class Query:
    """A QIDO-RS request: the matching keys, paging, and the level's parents from the path."""

    params: Sequence[tuple[str, str]]
    study_uid: str | None = None
    series_uid: str | None = None


def _keyword_of(key: str, keys: dict[str, tuple[str, Column, str]]) -> str | None:
    """A query key as a keyword of `keys`: keywords as they are, tags as 8 hex digits ("0020000D")."""
    if key in keys:
        return key
    upper = key.upper()
    return next((keyword for keyword, (tag, _, _) in keys.items() if tag == upper), None)


def _match(column: Column, kind: str, value: str) -> ColumnElement[bool]:
    if kind == "uid":
        uids = [uid.strip() for uid in value.replace("\\", ",").split(",") if uid.strip()]
        return column.in_(uids)
    if kind == "date":
        low, dash, high = value.partition("-")
        if not dash:
            return column == value
        conditions = [column != ""]
        if low:
            conditions.append(column >= low)
        if high:
            conditions.append(column <= high)
        return and_(*conditions)
    if kind == "modalities":
        wanted = [m.strip().upper() for m in value.replace("\\", ",").split(",") if m.strip()]
        slashed = literal("/") + column + literal("/")  # the study's modalities are kept joined by "/"
        return or_(*[slashed.like(f"%/{m}/%") for m in wanted])
    wildcard = "*" in value or "?" in value
    pattern = value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_").replace("*", "%").replace("?", "_")
    if kind == "name":  # person names match whatever their case (PS3.4 C.2.2.2.1, as archives do)
        lowered = func.lower(column)
        return lowered.like(pattern.lower(), escape="\\") if wildcard else lowered == value.lower()
    return column.like(pattern, escape="\\") if wildcard else column == value


def _filters(query: Query, levels: Sequence[dict[str, tuple[str, Column, str]]]) -> list[ColumnElement[bool]]:
    """The WHERE conditions of the query's keys over the levels searched; Invalid for a key Lumen cannot match."""
    filters: list[ColumnElement[bool]] = []
    for key, value in query.params:
        if key in _PAGING or not value:
            continue
        for keys in levels:
            keyword = _keyword_of(key, keys)
            if keyword is not None:
                _tag, column, kind = keys[keyword]
                filters.append(_match(column, kind, value))
                break
        else:
            known = sorted({k for keys in levels for k in keys})
            raise Invalid(f"query key {key!r} cannot be matched here; this level matches {', '.join(known)}")
    return filters


def _paging(query: Query) -> tuple[int, int]:
    values = dict(query.params)
    try:
        limit = int(values.get("limit", MAX_LIMIT))
        offset = int(values.get("offset", 0))
    except ValueError:
        raise Invalid("limit and offset must be whole numbers") from None
    if limit < 1 or offset < 0:
        raise Invalid("limit must be >= 1 and offset >= 0")
    return min(limit, MAX_LIMIT), offset


def _dicom_instances() -> ColumnElement[bool]:
    return Instance.source_format == DICOM


def search_studies(session: Session, query: Query, base_url: str) -> list[dict[str, Any]]:
    """QIDO-RS studies: every study with a DICOM instance matching the query, newest first."""
    limit, offset = _paging(query)
    counted = (
        select(Study, func.count(func.distinct(Series.id)), func.count(Instance.id))
        .join(Series, Series.study_id == Study.id).join(Instance, Instance.series_id == Series.id)
        .where(_dicom_instances(), *_filters(query, [_STUDY_KEYS, _SERIES_KEYS, _INSTANCE_KEYS]))
        .group_by(Study.id).order_by(Study.created_at.desc(), Study.id.desc()).limit(limit).offset(offset)
    )
    return [_study_json(study, series, instances, base_url) for study, series, instances in session.execute(counted)]


def search_series(session: Session, query: Query, base_url: str) -> list[dict[str, Any]]:
    """QIDO-RS series, of one study (`query.study_uid`) or of all."""
    limit, offset = _paging(query)
    levels = [_SERIES_KEYS, _INSTANCE_KEYS] if query.study_uid else [_STUDY_KEYS, _SERIES_KEYS, _INSTANCE_KEYS]
    statement = (
        select(Series, Study, func.count(Instance.id))
        .join(Study, Series.study_id == Study.id).join(Instance, Instance.series_id == Series.id)
        .where(_dicom_instances(), *_filters(query, levels))
    )
    if query.study_uid:
        statement = statement.where(Study.study_instance_uid == query.study_uid)
    statement = statement.group_by(Series.id, Study.id).order_by(Series.id).limit(limit).offset(offset)
    return [_series_json(series, study, count, base_url) for series, study, count in session.execute(statement)]


def search_instances(session: Session, query: Query, base_url: str) -> list[dict[str, Any]]:
    """QIDO-RS instances, of one series, one study or all."""
    limit, offset = _paging(query)
    levels = [_INSTANCE_KEYS] if query.series_uid else [_SERIES_KEYS, _INSTANCE_KEYS] if query.study_uid else [
        _STUDY_KEYS, _SERIES_KEYS, _INSTANCE_KEYS]
    statement = (
        select(Instance, Series, Study).join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id).where(_dicom_instances(), *_filters(query, levels))
    )
    if query.study_uid:
        statement = statement.where(Study.study_instance_uid == query.study_uid)
    if query.series_uid:
        statement = statement.where(Series.series_instance_uid == query.series_uid)
    statement = statement.order_by(Instance.series_id, Instance.number, Instance.id).limit(limit).offset(offset)
    return [_instance_json(instance, series, study, base_url) for instance, series, study in session.execute(statement)]


def instances_of(
    session: Session, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[Instance]:
    """The DICOM instances of a study, a series or one instance; NotFound when there is none."""
    statement = (
        select(Instance).join(Series, Instance.series_id == Series.id).join(Study, Series.study_id == Study.id)
        .where(Study.study_instance_uid == study_uid, _dicom_instances())
    )
    if series_uid is not None:
        statement = statement.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        statement = statement.where(Instance.sop_instance_uid == sop_uid)
    found = list(session.scalars(statement.order_by(Instance.series_id, Instance.number, Instance.id)))
    if not found:
        what = sop_uid or series_uid or study_uid
        raise NotFound(f"no DICOM instance of {what} is stored here", what=f"DICOM object {what}")
    return found


def stored_file(instance: Instance) -> bytes:
    """The instance's DICOM file as it was received."""
    return get_blob_store().get(instance.storage_key)


def metadata(instance: Instance, base_url: str) -> dict[str, Any]:
    """The instance's header in the DICOM JSON model (PS3.18 F.2), its pixel data as a bulk-data URI."""
    dataset = pixels.read_dicom(stored_file(instance), stop_before_pixels=True)
    frames_url = f"{base_url}/studies/{instance.series.study.study_instance_uid}/series/" \
        f"{instance.series.series_instance_uid}/instances/{instance.sop_instance_uid}/frames/1"
    document: dict[str, Any] = dataset.to_json_dict(bulk_data_threshold=1 << 16,
                                                   bulk_data_element_handler=lambda _element: frames_url)
    # Pixel data was left unread (every stored DICOM instance has an image: ingest refuses others): say where it is.
    document["7FE00010"] = {"vr": "OB" if instance.bits_stored <= 8 else "OW", "BulkDataURI": frames_url}
    return document


def frames(instance: Instance, numbers: Sequence[int]) -> list[bytes]:
    """The frames (1-based) as native little-endian pixel bytes (decoded from any transfer syntax)."""
    dataset = pixels.read_dicom(stored_file(instance))
    for number in numbers:
        if not 1 <= number <= instance.frames:
            raise NotFound(f"frame {number} out of range: the instance has {instance.frames}", what=f"Frame {number}")
    array = dataset.pixel_array
    if instance.frames == 1:
        array = array[None]
    return [np.ascontiguousarray(array[number - 1]).astype(array.dtype.newbyteorder("<")).tobytes()
            for number in numbers]


@dataclass(frozen=True)
class Stored:
    """STOW-RS's outcome: the SOP instances stored, and those refused with why."""

    stored: list[tuple[str, str, str]]  # (SOP Class UID, SOP Instance UID, retrieve URL)
    failed: list[tuple[str, str, str]]  # (SOP Class UID, SOP Instance UID, reason)


def store(session: Session, parts: Sequence[bytes], *, user_id: int, study_uid: str | None, base_url: str,
          ip: str, ingest: Callable[..., Any] = ingest_service.ingest) -> Stored:
    """Store each part as an upload of one file (the same checks and refusals as uploads), each in a savepoint of
    its own so that one refused file does not lose the others."""
    stored: list[tuple[str, str, str]] = []
    failed: list[tuple[str, str, str]] = []
    for number, body in enumerate(parts, start=1):
        sop_class, sop_uid, its_study = _uids_of(body)
        if study_uid is not None and its_study != study_uid:
            failed.append((sop_class, sop_uid, f"part {number}: its Study Instance UID is not {study_uid}"))
            continue
        try:
            with session.begin_nested():
                result = ingest(session, uploads=[ingest_service.Upload(f"stow-{number}.dcm", body)],
                                user_id=user_id, ip=ip)
        except AppError as exc:
            failed.append((sop_class, sop_uid, f"part {number}: {exc}"))
            continue
        instance = result.studies[0].instances[0][0]
        if instance.source_format != DICOM:
            failed.append((sop_class, sop_uid, f"part {number}: not a DICOM file"))
            continue
        stored.append((instance.sop_class_uid, instance.sop_instance_uid, _instance_url(instance, base_url)))
    return Stored(stored=stored, failed=failed)


def stow_response(outcome: Stored, base_url: str) -> dict[str, Any]:
    """The STOW-RS answer (PS3.18 10.5.3): Referenced SOP Sequence, Failed SOP Sequence with a reason."""
    document: dict[str, Any] = {"00081190": _attr("UR", base_url)}
    if outcome.stored:
        document["00081199"] = {"vr": "SQ", "Value": [
            {"00081150": _attr("UI", sop_class), "00081155": _attr("UI", sop_uid), "00081190": _attr("UR", url)}
            for sop_class, sop_uid, url in outcome.stored
        ]}
    if outcome.failed:
        # 0xC000 "Cannot understand" (PS3.4 B.2.3), with the reason in words beside it.
        document["00081198"] = {"vr": "SQ", "Value": [
            {"00081150": _attr("UI", sop_class), "00081155": _attr("UI", sop_uid),
             "00081197": _attr("US", 0xC000), "00090010": _attr("LO", "LUMEN"),
             "00091001": _attr("LT", reason)}
            for sop_class, sop_uid, reason in outcome.failed
        ]}
    return document


def _uids_of(body: bytes) -> tuple[str, str, str]:
    """SOP Class, SOP Instance and Study Instance UIDs of a part ("" each when it is not DICOM: ingest says why)."""
    try:
        dataset = pixels.read_dicom(body, stop_before_pixels=True)
    except Exception:
        return "", "", ""
    sop_class, sop_uid, study_uid = (str(dataset.get(k, "")) for k in ("SOPClassUID", "SOPInstanceUID",
                                                                      "StudyInstanceUID"))
    return sop_class, sop_uid, study_uid


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    """One attribute in the DICOM JSON model; no Value when it is empty."""
    kept = [value for value in values if value not in ("", None)]
    if vr == "PN":
        kept = [{"Alphabetic": value} for value in kept]
    return {"vr": vr, "Value": kept} if kept else {"vr": vr}


def _study_url(study: Study, base_url: str) -> str:
    return f"{base_url}/studies/{study.study_instance_uid}"


def _instance_url(instance: Instance, base_url: str) -> str:
    series = instance.series
    return f"{_study_url(series.study, base_url)}/series/{series.series_instance_uid}/instances/" \
        f"{instance.sop_instance_uid}"


def _study_json(study: Study, series: int, instances: int, base_url: str) -> dict[str, Any]:
    return {
        "00080020": _attr("DA", study.study_date),
        "00080050": _attr("SH", study.accession_number),
        "00080061": _attr("CS", *[m for m in study.modality.split("/") if m]),
        "00081030": _attr("LO", study.description),
        "00081190": _attr("UR", _study_url(study, base_url)),
        "00100010": _attr("PN", study.patient_name),
        "00100020": _attr("LO", study.patient_id),
        "00100030": _attr("DA", study.patient_birth_date),
        "0020000D": _attr("UI", study.study_instance_uid),
        "00201206": _attr("IS", series),
        "00201208": _attr("IS", instances),
    }


def _series_json(series: Series, study: Study, instances: int, base_url: str) -> dict[str, Any]:
    return {
        "00080060": _attr("CS", series.modality),
        "0008103E": _attr("LO", series.description),
        "00081190": _attr("UR", f"{_study_url(study, base_url)}/series/{series.series_instance_uid}"),
        "00180015": _attr("CS", series.body_part),
        "0020000D": _attr("UI", study.study_instance_uid),
        "0020000E": _attr("UI", series.series_instance_uid),
        "00200011": _attr("IS", series.number),
        "00201209": _attr("IS", instances),
    }


def _instance_json(instance: Instance, series: Series, study: Study, base_url: str) -> dict[str, Any]:
    return {
        "00080016": _attr("UI", instance.sop_class_uid),
        "00080018": _attr("UI", instance.sop_instance_uid),
        "00080060": _attr("CS", instance.modality),
        "00081190": _attr("UR", _instance_url(instance, base_url)),
        "0020000D": _attr("UI", study.study_instance_uid),
        "0020000E": _attr("UI", series.series_instance_uid),
        "00200013": _attr("IS", instance.number),
        "00280008": _attr("IS", instance.frames),
        "00280010": _attr("US", instance.rows),
        "00280011": _attr("US", instance.columns),
    }
