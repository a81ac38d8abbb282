"""Reading stored predictions and heatmaps."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.predictions.schemas import HeatmapRef, PredictionOut
from app.tables import Instance, Prediction


class NotFound(LookupError):
    pass


def latest_prediction(session: Session, *, instance_id: int) -> PredictionOut:
    """The newest prediction of an instance with its heatmaps; NotFound if none (yet)."""
    if session.get(Instance, instance_id) is None:
        raise NotFound(f"instance {instance_id} does not exist")
    prediction = session.scalar(
        select(Prediction)
        .where(Prediction.instance_id == instance_id)
        .options(selectinload(Prediction.heatmaps), selectinload(Prediction.model))
        .order_by(Prediction.created_at.desc(), Prediction.id.desc())
        .limit(1)
    )
    if prediction is None:
        raise NotFound(f"instance {instance_id} has no prediction (yet)")
    return PredictionOut(
        id=prediction.id,
        instance_id=prediction.instance_id,
        job_id=prediction.job_id,
        model=prediction.model.name,
        model_version=prediction.model.version,
        labels=list(prediction.model.labels),
        probabilities=list(prediction.probabilities),
        label=prediction.label,
        label_index=prediction.label_index,
        uncertainty={
            "predictive_entropy": prediction.predictive_entropy,
            "mutual_information": prediction.mutual_information,
            "mc_spread": prediction.mc_spread,
        },
        referral=prediction.referral,
        created_at=prediction.created_at,
        heatmaps=[
            HeatmapRef(
                id=h.id,
                method=h.method,
                target_class=h.target_class,
                shape=list(h.shape),
                value_min=h.value_min,
                value_max=h.value_max,
                scores=dict(h.scores),
            )
            for h in sorted(prediction.heatmaps, key=lambda h: h.id)
        ],
    )
