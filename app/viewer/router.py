"""Viewer JSON API: the worklist for live updates, a study's priors, instance frames and heatmaps as PNG, JPEG or
raw arrays.

Every pixel response is addressed by what never changes: an instance's stored file (its sha256 is in the ETag;
instances are never updated once stored) or a heatmap row (written once by its job). The browser may keep them
for a year without asking again; shared caches may not (PHI).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.orm import Session

from app.audit.dependencies import ClientIp
from app.auth.dependencies import CanRead
from app.bounds import DbId, Index
from app.db import DbSession
from app.predictions.dependencies import HeatmapOr404
from app.studies.dependencies import InstanceOr404
from app.tables import User
from app.viewer import colour, images, raw
from app.viewer import service as viewer_service
from app.viewer.encodings import PixelEncoding
from app.viewer.schemas import Priors, Worklist, WorklistRow

logger = logging.getLogger(__name__)

router = APIRouter(tags=["viewer"])

# Pixels of a patient: the browser may keep them (they never change at their URL), shared caches may not.
_CACHE_CONTROL = "private, max-age=31536000, immutable"
META_HEADER = "X-Lumen-Meta"  # JSON: shape, dtype, value mapping, presets, spacing, orientation, units
_RAW_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/octet-stream": {}}, "description": f"raw array; its shape in {META_HEADER}"},
    304: {"description": "not modified"},
    404: {"description": "no such object or frame"},
    422: {"description": "a colour image, or pixels that cannot be decoded"},
}
_IMAGE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the stored JPEG, or the full PNG"},
    304: {"description": "not modified"},
    404: {"description": "no such object or frame"},
    422: {"description": "the stored pixels cannot be decoded"},
}
_PNG_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"image/png": {}}},
    304: {"description": "not modified"},
    404: {"description": "no such object or frame"},
    422: {"description": "the stored pixels cannot be decoded"},
}


def _not_modified(request: Request, etag: str) -> bool:
    sent = request.headers.get("if-none-match", "")
    return etag in {tag.strip() for tag in sent.split(",")} or sent.strip() == "*"


def _cached_response(
    request: Request, *, etag: str, render: Callable[[], tuple[bytes, str, dict[str, str]]], sent: Callable[[], None]
) -> Response:
    """A 304 when the client holds this ETag, else the rendered body, its media type and its own headers."""
    headers = {"ETag": etag, "Cache-Control": _CACHE_CONTROL}
    if _not_modified(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    # A frame past the last one (404) or pixels that cannot be decoded (422): app/http_errors.py answers.
    body, media_type, more_headers = render()
    sent()
    return Response(body, media_type=media_type, headers={**headers, **more_headers})


def _png_response(request: Request, *, etag: str, render: Callable[[], bytes], sent: Callable[[], None]) -> Response:
    return _cached_response(request, etag=etag, render=lambda: (render(), "image/png", {}), sent=sent)


def _raw_response(
    request: Request, *, etag: str, render: Callable[[], raw.RawFrame], sent: Callable[[], None]
) -> Response:
    def body() -> tuple[bytes, str, dict[str, str]]:
        frame = render()
        return frame.body, "application/octet-stream", {META_HEADER: json.dumps(frame.meta, separators=(",", ":"))}

    return _cached_response(request, etag=etag, render=body, sent=sent)


def _audit(
    session: Session, user: User, ip: str, *, object_type: str, object_id: int, frame: int, form: str
) -> Callable[[], None]:
    """What a pixel route calls once it has rendered what it sends: a 304 (the client holds the bytes already)
    and a failed render record nothing."""
    return partial(viewer_service.record_pixels_sent, session, user_id=user.id, object_type=object_type,
                   object_id=object_id, frame=frame, form=form, ip=ip)


@router.get("/worklist", response_model=Worklist)
def worklist(user: CanRead, session: DbSession) -> Worklist:
    """The newest studies with their AI state; the worklist page polls it while jobs run."""
    return viewer_service.worklist_for(session, user=user)


@router.get("/worklist/{study_id}", response_model=WorklistRow)
def worklist_row(user: CanRead, study_id: DbId, session: DbSession) -> WorklistRow:
    """One study's worklist row; the study page polls it while its jobs run."""
    return viewer_service.worklist_row_for(session, study_id=study_id, user=user)


@router.get(
    "/studies/{study_id}/priors",
    response_model=Priors,
    responses={403: {"description": "you have reads of this study pending in a reader study"},
               404: {"description": "no such study"}},
)
def study_priors(user: CanRead, study_id: DbId, session: DbSession) -> Priors:
    """The other studies of the study's patient (same PatientID) that the caller may open, newest first, with the
    first image of each for a side-by-side comparison; the same refusals as the study page."""
    return viewer_service.priors_for(session, study_id=study_id, user=user)


@router.get("/instances/{instance_id}/image.png", responses=_PNG_RESPONSES, response_class=Response)
def instance_image(
    request: Request,
    user: CanRead,
    instance: InstanceOr404,
    session: DbSession,
    ip: ClientIp,
    frame: Annotated[Index, Query()] = 0,
    max_size: Annotated[int | None, Query(ge=16, le=8192)] = None,
) -> Response:
    """One frame of an instance as a display PNG (windowed); `max_size` downscales for a fast preview."""
    etag = images.instance_etag(instance, frame=frame, max_size=max_size)
    sent = _audit(session, user, ip, object_type="instance", object_id=instance.id, frame=frame, form="png")
    return _png_response(
        request, etag=etag, render=lambda: images.instance_png(instance=instance, frame=frame, max_size=max_size),
        sent=sent,
    )


@router.get("/heatmaps/{heatmap_id}.png", responses=_PNG_RESPONSES, response_class=Response)
def heatmap_image(
    request: Request,
    user: CanRead,
    heatmap: HeatmapOr404,
    session: DbSession,
    ip: ClientIp,
    frame: Annotated[Index, Query()] = 0,
) -> Response:
    """A heatmap coloured for overlay (RGBA, alpha from magnitude), normalised for display only."""
    etag = images.heatmap_etag(heatmap, frame=frame)
    sent = _audit(session, user, ip, object_type="heatmap", object_id=heatmap.id, frame=frame, form="png")
    return _png_response(request, etag=etag, render=lambda: images.heatmap_png(heatmap, frame=frame), sent=sent)


@router.get("/instances/{instance_id}/image", responses=_IMAGE_RESPONSES, response_class=Response)
def instance_full_image(
    request: Request,
    user: CanRead,
    instance: InstanceOr404,
    session: DbSession,
    ip: ClientIp,
    frame: Annotated[Index, Query()] = 0,
) -> Response:
    """One frame at full resolution, fast to send and show: the stored JPEG itself when it is one, else the PNG."""
    etag = colour.full_image_etag(instance, frame=frame)
    sent = _audit(session, user, ip, object_type="instance", object_id=instance.id, frame=frame, form="image")

    def render() -> tuple[bytes, str, dict[str, str]]:
        image = colour.full_image(instance, frame=frame)
        return image.body, image.media_type, {}

    return _cached_response(request, etag=etag, render=render, sent=sent)


@router.get("/instances/{instance_id}/pixels", responses=_RAW_RESPONSES, response_class=Response)
def instance_pixels(
    request: Request,
    user: CanRead,
    instance: InstanceOr404,
    session: DbSession,
    ip: ClientIp,
    frame: Annotated[Index, Query()] = 0,
    encoding: Annotated[PixelEncoding, Query()] = PixelEncoding.raw,
) -> Response:
    """A grayscale frame as little-endian uint16 (value = stored * scale + offset), for windowing in the browser;
    `encoding=up-zigzag-shuffle-deflate` sends it compressed (app/viewer/encodings.py)."""
    tag = f'"{encoding}-{raw.META_VERSION}-'
    etag = images.instance_etag(instance, frame=frame, max_size=None).replace('"', tag, 1)
    sent = _audit(session, user, ip, object_type="instance", object_id=instance.id, frame=frame, form="raw")
    return _raw_response(
        request, etag=etag, render=lambda: raw.encoded_frame(instance, frame=frame, encoding=encoding), sent=sent
    )


@router.get("/heatmaps/{heatmap_id}/data", responses=_RAW_RESPONSES, response_class=Response)
def heatmap_data(
    request: Request,
    user: CanRead,
    heatmap: HeatmapOr404,
    session: DbSession,
    ip: ClientIp,
    frame: Annotated[Index, Query()] = 0,
) -> Response:
    """A heatmap's raw attribution as stored (float16, little-endian), coloured in the browser."""
    etag = images.heatmap_etag(heatmap, frame=frame).replace('"', '"data-', 1)
    sent = _audit(session, user, ip, object_type="heatmap", object_id=heatmap.id, frame=frame, form="data")
    return _raw_response(request, etag=etag, render=lambda: raw.heatmap_data(heatmap, frame=frame), sent=sent)
