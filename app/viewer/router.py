"""Viewer JSON API: the worklist for live updates, instance frames and heatmaps as PNG or raw arrays."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.auth.dependencies import CanRead
from app.db import DbSession
from app.predictions.dependencies import HeatmapOr404
from app.studies.dependencies import InstanceOr404
from app.viewer import images, raw
from app.viewer import service as viewer_service
from app.viewer.schemas import Worklist, WorklistRow

logger = logging.getLogger(__name__)

router = APIRouter(tags=["viewer"])

# Pixels of a patient: the browser may keep them, shared caches may not.
_CACHE_CONTROL = "private, max-age=3600"
META_HEADER = "X-Lumen-Meta"  # JSON: shape, dtype, value mapping, presets
_RAW_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/octet-stream": {}}, "description": f"raw array; its shape in {META_HEADER}"},
    304: {"description": "not modified"},
    404: {"description": "no such object or frame"},
    422: {"description": "a colour image, or pixels that cannot be decoded"},
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


def _png_response(request: Request, *, etag: str, render: Callable[[], bytes]) -> Response:
    headers = {"ETag": etag, "Cache-Control": _CACHE_CONTROL}
    if _not_modified(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    # A frame past the last one (404) or pixels that cannot be decoded (422): app/http_errors.py answers.
    return Response(render(), media_type="image/png", headers=headers)


def _raw_response(request: Request, *, etag: str, render: Callable[[], raw.RawFrame]) -> Response:
    if _not_modified(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    frame = render()
    headers = {
        "ETag": etag,
        "Cache-Control": _CACHE_CONTROL,
        META_HEADER: json.dumps(frame.meta, separators=(",", ":")),
    }
    return Response(frame.body, media_type="application/octet-stream", headers=headers)


@router.get("/worklist", response_model=Worklist)
def worklist(user: CanRead, session: DbSession) -> Worklist:
    """The newest studies with their AI state; the worklist page polls it while jobs run."""
    return viewer_service.worklist_for(session, user_id=user.id)


@router.get("/worklist/{study_id}", response_model=WorklistRow)
def worklist_row(user: CanRead, study_id: int, session: DbSession) -> WorklistRow:
    """One study's worklist row; the study page polls it while its jobs run."""
    return viewer_service.worklist_row_for(session, study_id=study_id, user_id=user.id)


@router.get("/instances/{instance_id}/image.png", responses=_PNG_RESPONSES, response_class=Response)
def instance_image(
    request: Request,
    _user: CanRead,
    instance: InstanceOr404,
    frame: Annotated[int, Query(ge=0)] = 0,
    max_size: Annotated[int | None, Query(ge=16, le=8192)] = None,
) -> Response:
    """One frame of an instance as a display PNG (windowed); `max_size` downscales for a fast preview."""
    etag = images.instance_etag(instance, frame=frame, max_size=max_size)
    return _png_response(
        request, etag=etag, render=lambda: images.instance_png(instance=instance, frame=frame, max_size=max_size)
    )


@router.get("/heatmaps/{heatmap_id}.png", responses=_PNG_RESPONSES, response_class=Response)
def heatmap_image(
    request: Request,
    _user: CanRead,
    heatmap: HeatmapOr404,
    frame: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """A heatmap coloured for overlay (RGBA, alpha from magnitude), normalised for display only."""
    etag = images.heatmap_etag(heatmap, frame=frame)
    return _png_response(request, etag=etag, render=lambda: images.heatmap_png(heatmap, frame=frame))


@router.get("/instances/{instance_id}/pixels", responses=_RAW_RESPONSES, response_class=Response)
def instance_pixels(
    request: Request,
    _user: CanRead,
    instance: InstanceOr404,
    frame: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """A grayscale frame as little-endian uint16 (value = stored * scale + offset), for windowing in the browser."""
    etag = images.instance_etag(instance, frame=frame, max_size=None).replace('"', '"raw-', 1)
    return _raw_response(request, etag=etag, render=lambda: raw.raw_frame(instance, frame=frame))


@router.get("/heatmaps/{heatmap_id}/data", responses=_RAW_RESPONSES, response_class=Response)
def heatmap_data(
    request: Request,
    _user: CanRead,
    heatmap: HeatmapOr404,
    frame: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """A heatmap's raw attribution as stored (float16, little-endian), coloured in the browser."""
    etag = images.heatmap_etag(heatmap, frame=frame).replace('"', '"data-', 1)
    return _raw_response(request, etag=etag, render=lambda: raw.heatmap_data(heatmap, frame=frame))
