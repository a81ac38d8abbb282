"""Prediction routes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from app.auth.dependencies import CanRead
from app.db import DbSession
from app.predictions import service as predictions_service
from app.predictions.schemas import PredictionOut
from app.reader_studies import access as study_access

router = APIRouter(tags=["predictions"])


@router.get("/instances/{instance_id}/prediction", response_model=PredictionOut)
def get_prediction(instance_id: int, session: DbSession, user: CanRead) -> PredictionOut:
    """Probabilities, label, uncertainty and the heatmaps (id, method) of an instance's newest prediction.

    403 while a reader study hides the model's output of this image from the caller.
    """
    try:
        allowance = study_access.check_prediction(session, user_id=user.id, instance_id=instance_id)
        prediction = predictions_service.latest_prediction(session, instance_id=instance_id)
    except predictions_service.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except study_access.Blinded as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
    if allowance is not None:  # only the heatmap the condition shows
        prediction = prediction.model_copy(
            update={"heatmaps": [item for item in prediction.heatmaps if allowance.heatmap(item.method)]}
        )
    return prediction
