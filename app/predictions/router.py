"""Prediction routes."""

from __future__ import annotations

from fastapi import APIRouter

from app.audit.dependencies import ClientIp
from app.auth.dependencies import CanRead
from app.db import DbSession
from app.predictions import service as predictions_service
from app.predictions.schemas import PredictionOut
from app.studies.dependencies import InstanceOr404

router = APIRouter(tags=["predictions"])


@router.get("/instances/{instance_id}/prediction", response_model=PredictionOut)
def get_prediction(user: CanRead, instance: InstanceOr404, session: DbSession, ip: ClientIp) -> PredictionOut:
    """Probabilities, label, uncertainty and the heatmaps (id, method) of an instance's newest prediction.

    403 while a reader study hides the model's output of this image from the caller.
    """
    return predictions_service.visible_prediction(session, instance=instance, user_id=user.id, ip=ip)
