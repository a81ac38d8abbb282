"""DICOMweb routes (PS3.18) under /dicomweb: QIDO-RS, WADO-RS and STOW-RS, with Lumen's sign-in (a bearer token
or the session cookie). DICOM objects carry the patient's identity, so only the roles that see identity
(admins and coordinators) may use them; a reader is refused with that reason (docs/security.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from starlette.concurrency import run_in_threadpool

from app.audit import service as audit
from app.audit.dependencies import ClientIp
from app.auth.dependencies import CurrentUser
from app.config import get_settings
from app.db import DbSession
from app.dicomweb import multipart
from app.dicomweb import service as dicomweb
from app.errors import Forbidden, Invalid
from app.tables import Instance, User
from app.viewer import images
from app.visibility import sees_identity

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
DICOM_JSON = "application/dicom+json"


class NoIdentity(Forbidden):
    """A role that sees pseudonyms asked for DICOM objects, which hold the patient's identity."""


async def _dicomweb_user(user: CurrentUser) -> User:
    if not sees_identity(user.role):
        raise NoIdentity(
            f"DICOMweb serves DICOM objects with the patient's identity in their headers; the {user.role.value} role "
            "sees pseudonyms only (use the reading room)"
        )
    return user


DicomwebUser = Annotated[User, Depends(_dicomweb_user)]
_JSON: dict[int | str, dict[str, Any]] = {200: {"content": {DICOM_JSON: {}}}, 400: {"description": "a query key "
                                          "that cannot be matched"}, 403: {"description": "a role without identity"}}
_OBJECTS: dict[int | str, dict[str, Any]] = {200: {"content": {"multipart/related": {}}},
                                             404: {"description": "no such DICOM object"}}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicomweb"


def _json(documents: Any) -> Response:
    return Response(json.dumps(documents), media_type=DICOM_JSON)


def _query(request: Request, **uids: str) -> dicomweb.Query:
    return dicomweb.Query(params=list(request.query_params.multi_items()), **uids)


# QIDO-RS
@router.get("/studies", responses=_JSON, response_class=Response)
def search_studies(request: Request, session: DbSession, _user: DicomwebUser) -> Response:
    """Studies matching the query (PatientID, PatientName, StudyDate, StudyInstanceUID, AccessionNumber,
    ModalitiesInStudy...; limit, offset)."""
    return _json(dicomweb.search_studies(session, _query(request), _base(request)))


@router.get("/series", responses=_JSON, response_class=Response)
def search_all_series(request: Request, session: DbSession, _user: DicomwebUser) -> Response:
    """Series of every study matching the query."""
    return _json(dicomweb.search_series(session, _query(request), _base(request)))


@router.get("/instances", responses=_JSON, response_class=Response)
def search_all_instances(request: Request, session: DbSession, _user: DicomwebUser) -> Response:
    """Instances of every study matching the query."""
    return _json(dicomweb.search_instances(session, _query(request), _base(request)))


@router.get("/studies/{study}/series", responses=_JSON, response_class=Response)
def search_series(study: str, request: Request, session: DbSession, _user: DicomwebUser) -> Response:
    """The series of one study matching the query."""
    return _json(dicomweb.search_series(session, _query(request, study_uid=study), _base(request)))


@router.get("/studies/{study}/instances", responses=_JSON, response_class=Response)
def search_study_instances(study: str, request: Request, session: DbSession, _user: DicomwebUser) -> Response:
    """The instances of one study matching the query."""
    return _json(dicomweb.search_instances(session, _query(request, study_uid=study), _base(request)))


@router.get("/studies/{study}/series/{series}/instances", responses=_JSON, response_class=Response)
def search_series_instances(study: str, series: str, request: Request, session: DbSession,
                            _user: DicomwebUser) -> Response:
    """The instances of one series matching the query."""
    query = _query(request, study_uid=study, series_uid=series)
    return _json(dicomweb.search_instances(session, query, _base(request)))


# WADO-RS
def _objects(session: Any, user: User, ip: str, found: list[Instance]) -> Response:
    body, boundary = multipart.join(
        multipart.Part(content_type=f"application/dicom; transfer-syntax={i.transfer_syntax_uid or '*'}",
                       body=dicomweb.stored_file(i))
        for i in found
    )
    audit.record_when_read(session, action="dicomweb.retrieve", user_id=user.id, object_type="study",
                           object_id=found[0].series.study_id, ip=ip, detail={"instances": len(found)})
    return Response(body, media_type=f'multipart/related; type="application/dicom"; boundary={boundary}')


@router.get("/studies/{study}", responses=_OBJECTS, response_class=Response)
def retrieve_study(study: str, session: DbSession, user: DicomwebUser, ip: ClientIp) -> Response:
    """Every DICOM instance of the study, as received, in one multipart/related answer."""
    return _objects(session, user, ip, dicomweb.instances_of(session, study_uid=study))


@router.get("/studies/{study}/series/{series}", responses=_OBJECTS, response_class=Response)
def retrieve_series(study: str, series: str, session: DbSession, user: DicomwebUser, ip: ClientIp) -> Response:
    """Every DICOM instance of the series."""
    return _objects(session, user, ip, dicomweb.instances_of(session, study_uid=study, series_uid=series))


@router.get("/studies/{study}/series/{series}/instances/{instance}", responses=_OBJECTS, response_class=Response)
def retrieve_instance(study: str, series: str, instance: str, session: DbSession, user: DicomwebUser,
                      ip: ClientIp) -> Response:
    """One DICOM instance, as received."""
    found = dicomweb.instances_of(session, study_uid=study, series_uid=series, sop_uid=instance)
    return _objects(session, user, ip, found)


@router.get("/studies/{study}/metadata", responses=_JSON, response_class=Response)
def study_metadata(study: str, request: Request, session: DbSession, _user: DicomwebUser) -> Response:
    """The headers of the study's instances in the DICOM JSON model, pixel data as bulk-data URIs."""
    found = dicomweb.instances_of(session, study_uid=study)
    return _json([dicomweb.metadata(i, _base(request)) for i in found])


@router.get("/studies/{study}/series/{series}/metadata", responses=_JSON, response_class=Response)
def series_metadata(study: str, series: str, request: Request, session: DbSession, _user: DicomwebUser) -> Response:
    """The headers of the series' instances."""
    found = dicomweb.instances_of(session, study_uid=study, series_uid=series)
    return _json([dicomweb.metadata(i, _base(request)) for i in found])


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata", responses=_JSON, response_class=Response)
def instance_metadata(study: str, series: str, instance: str, request: Request, session: DbSession,
                      _user: DicomwebUser) -> Response:
    """The header of one instance."""
    found = dicomweb.instances_of(session, study_uid=study, series_uid=series, sop_uid=instance)
    return _json([dicomweb.metadata(found[0], _base(request))])


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", responses=_OBJECTS,
            response_class=Response)
def retrieve_frames(study: str, series: str, instance: str, frames: str, session: DbSession, user: DicomwebUser,
                    ip: ClientIp) -> Response:
    """Frames (1-based, comma-separated) as native little-endian pixel bytes, whatever the file's encoding."""
    try:
        numbers = [int(number) for number in frames.split(",")]
    except ValueError:
        raise Invalid(f"frames must be 1-based numbers joined by commas, got {frames!r}") from None
    [found] = dicomweb.instances_of(session, study_uid=study, series_uid=series, sop_uid=instance)
    body, boundary = multipart.join(multipart.Part("application/octet-stream", data)
                                    for data in dicomweb.frames(found, numbers))
    audit.record_when_read(session, action="dicomweb.retrieve", user_id=user.id, object_type="instance",
                           object_id=found.id, ip=ip, detail={"frames": numbers})
    return Response(body, media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered",
            responses={200: {"content": {"image/png": {}}}}, response_class=Response)
def rendered_instance(study: str, series: str, instance: str, session: DbSession, user: DicomwebUser,
                      ip: ClientIp) -> Response:
    """The first frame rendered for display (its window), as PNG."""
    [found] = dicomweb.instances_of(session, study_uid=study, series_uid=series, sop_uid=instance)
    audit.record_when_read(session, action="dicomweb.rendered", user_id=user.id, object_type="instance",
                           object_id=found.id, ip=ip, detail={})
    return Response(images.instance_png(instance=found, frame=0, max_size=None), media_type="image/png")


# STOW-RS
_STOW: dict[int | str, dict[str, Any]] = {
    200: {"content": {DICOM_JSON: {}}, "description": "every instance stored"},
    202: {"description": "some stored, some refused (Failed SOP Sequence says why)"},
    409: {"description": "none stored"},
    413: {"description": "larger than the upload limit"},
}


async def _store(request: Request, session: Any, user: User, ip: str, study: str | None) -> Response:
    boundary = multipart.boundary_of(request.headers.get("content-type", ""))
    limit = get_settings().max_upload_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return Response(json.dumps({"detail": f"larger than the upload limit of {limit} bytes"}),
                            status_code=status.HTTP_413_CONTENT_TOO_LARGE, media_type="application/json")
    parts = multipart.split(bytes(body), boundary)
    wanted = [p.body for p in parts if p.content_type.split(";")[0].strip().lower() in ("application/dicom", "")]
    if not wanted:
        raise Invalid("no application/dicom part in the request (this server stores DICOM files, not metadata "
                      "with bulk data)")
    outcome = await run_in_threadpool(dicomweb.store, session, wanted, user_id=user.id, study_uid=study,
                                      base_url=_base(request), ip=ip)
    code = status.HTTP_200_OK if not outcome.failed else (
        status.HTTP_202_ACCEPTED if outcome.stored else status.HTTP_409_CONFLICT)
    return Response(json.dumps(dicomweb.stow_response(outcome, _base(request))), status_code=code,
                    media_type=DICOM_JSON)


@router.post("/studies", responses=_STOW, response_class=Response)
async def store_instances(request: Request, session: DbSession, user: DicomwebUser, ip: ClientIp) -> Response:
    """Store DICOM files (multipart/related; type="application/dicom"), with the checks of an upload; each
    stored instance gets the AI jobs an upload gets."""
    return await _store(request, session, user, ip, None)


@router.post("/studies/{study}", responses=_STOW, response_class=Response)
async def store_study_instances(study: str, request: Request, session: DbSession, user: DicomwebUser,
                                ip: ClientIp) -> Response:
    """Store DICOM files of this study; a file of another study is refused."""
    return await _store(request, session, user, ip, study)
