"""Prediction routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.audit.dependencies import ClientIp
from app.auth.dependencies import CanRead
from app.bounds import DbId
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


@router.get(
    "/predictions/{prediction_id}/similar/{rank}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the thumbnail"},
               403: {"description": "a reader study hides this image's similar cases from the caller"},
               404: {"description": "no such prediction or similar case"}},
)
def similar_case_thumbnail(
    prediction_id: DbId, rank: Annotated[int, Path(ge=1, le=100)], user: CanRead, session: DbSession
) -> Response:
    """The thumbnail of one of the prediction's similar confirmed cases (rank 1: the nearest), from the model's
    reference library: public training images, never a stored study."""
    png = predictions_service.similar_thumbnail(session, prediction_id=prediction_id, rank=rank, user_id=user.id)
    # A prediction's similar cases never change: the browser may keep the thumbnail for the session.
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400, immutable"})
