"""Get-or-404 dependencies of the viewer routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status

from app.db import DbSession
from app.tables import Heatmap, Instance
from app.viewer import service as viewer_service


def _instance_or_404(instance_id: int, session: DbSession) -> Instance:
    try:
        return viewer_service.get_instance(session, instance_id=instance_id)
    except viewer_service.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


def _heatmap_or_404(heatmap_id: int, session: DbSession) -> Heatmap:
    try:
        return viewer_service.get_heatmap(session, heatmap_id=heatmap_id)
    except viewer_service.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


InstanceOr404 = Annotated[Instance, Depends(_instance_or_404)]
HeatmapOr404 = Annotated[Heatmap, Depends(_heatmap_or_404)]
