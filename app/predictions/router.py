"""Prediction routes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from app.auth.dependencies import CanRead
from app.db import DbSession
from app.predictions import service as predictions_service
from app.predictions.schemas import PredictionOut

router = APIRouter(tags=["predictions"])


@router.get("/instances/{instance_id}/prediction", response_model=PredictionOut)
def get_prediction(instance_id: int, session: DbSession, _user: CanRead) -> PredictionOut:
    """Probabilities, label, uncertainty and the heatmaps (id, method) of an instance's newest prediction."""
    try:
        return predictions_service.latest_prediction(session, instance_id=instance_id)
    except predictions_service.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
