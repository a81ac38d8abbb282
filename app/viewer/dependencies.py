"""Get-or-404 dependencies of the viewer routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status

from app.auth.dependencies import CurrentUser
from app.db import DbSession
from app.reader_studies import access as study_access
from app.tables import Heatmap, Instance
from app.viewer import service as viewer_service


def _instance_or_404(instance_id: int, session: DbSession) -> Instance:
    try:
        return viewer_service.get_instance(session, instance_id=instance_id)
    except viewer_service.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


def _heatmap_or_404(heatmap_id: int, session: DbSession, user: CurrentUser) -> Heatmap:
    """The heatmap, unless it does not exist (404) or a reader study hides it from this reader (403)."""
    try:
        heatmap = viewer_service.get_heatmap(session, heatmap_id=heatmap_id)
    except viewer_service.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    try:
        study_access.check_heatmap(
            session, user_id=user.id, instance_id=heatmap.prediction.instance_id, method=heatmap.method
        )
    except study_access.Blinded as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
    return heatmap


InstanceOr404 = Annotated[Instance, Depends(_instance_or_404)]
HeatmapOr404 = Annotated[Heatmap, Depends(_heatmap_or_404)]
