"""Get-or-404 of a heatmap, and 403 while a reader study hides it from the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.dependencies import CurrentUser
from app.bounds import DbId
from app.db import DbSession
from app.predictions import service as predictions_service
from app.tables import Heatmap


def _heatmap_or_404(heatmap_id: DbId, session: DbSession, user: CurrentUser) -> Heatmap:
    return predictions_service.visible_heatmap(session, heatmap_id=heatmap_id, user_id=user.id)


HeatmapOr404 = Annotated[Heatmap, Depends(_heatmap_or_404)]
