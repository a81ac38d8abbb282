"""Stored predictions and heatmaps: the newest prediction of an image (one query for every page and the API),
and what of it a caller may see."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer, selectinload

from app import visibility
from app.audit import service as audit_service
from app.errors import NotFound
from app.predictions.schemas import HeatmapRef, PredictionOut
from app.tables import Heatmap, Instance, Job, JobState, Prediction


def latest_predictions(
    session: Session, *, instance_ids: Sequence[int], model_id: int | None = None
) -> dict[int, Prediction]:
    """The newest prediction of each of these images (of this model only, if given), by image id, with its model
    and its heatmaps loaded (their arrays are not: the image routes load one at a time). Images without a
    prediction are left out."""
    newest = select(func.max(Prediction.id)).where(Prediction.instance_id.in_(instance_ids))
    if model_id is not None:
        newest = newest.where(Prediction.model_id == model_id)
    predictions = session.scalars(
        select(Prediction)
        .where(Prediction.id.in_(newest.group_by(Prediction.instance_id)))
        .options(selectinload(Prediction.heatmaps).options(defer(Heatmap.data)), selectinload(Prediction.model))
    )
    return {prediction.instance_id: prediction for prediction in predictions}


def _domain_words(card: dict) -> str:
    domain = card.get("domain") or {}
    return str(domain.get("photometric") or domain.get("body_part") or "images").strip()


def domain_refusals(
    session: Session, *, instance_ids: Sequence[int], predictions: Mapping[int, Prediction]
) -> dict[int, str]:
    """Why the model said nothing, by image id, for the images whose newest finished job was refused by its
    model's input-domain gate (the worker records out_of_domain, ood_score and ood_threshold in the job's
    timings): one plain sentence each. Images with a newer prediction in `predictions` (the caller's
    `latest_predictions` of the same images), or none refused, are left out."""
    newest = (
        select(func.max(Job.id))
        .where(Job.instance_id.in_(instance_ids), Job.state == JobState.done)
        .group_by(Job.instance_id)
    )
    jobs = session.scalars(select(Job).where(Job.id.in_(newest)).options(selectinload(Job.model))).all()
    refused = {job.instance_id: job for job in jobs if job.instance_id is not None
               and (job.timings or {}).get("out_of_domain") == 1.0}
    return {
        instance_id: (
            f"Outside this model's domain: {job.model.name} was trained on {_domain_words(job.model.card)}, and this "
            f"image does not look like them (score {job.timings.get('ood_score', float('nan')):.0f}, threshold "
            f"{job.timings.get('ood_threshold', float('nan')):.0f}). No prediction or heatmap is shown."
        )
        for instance_id, job in refused.items()
        if instance_id not in predictions or predictions[instance_id].job_id < job.id
    }


def visible_prediction(session: Session, *, instance: Instance, user_id: int, ip: str) -> PredictionOut:
    """The image's newest prediction with its heatmaps, as far as this user may see it: Blinded (403) while a
    reader study hides the model's output from them, only the heatmap its condition shows; NotFound if none.
    Audited once the request commits."""
    allowance = visibility.check_prediction(session, user_id=user_id, instance_id=instance.id)
    prediction = latest_predictions(session, instance_ids=[instance.id]).get(instance.id)
    if prediction is None:
        raise NotFound(f"instance {instance.id} has no prediction (yet)")
    heatmaps = sorted(prediction.heatmaps, key=lambda h: h.id)
    if allowance is not None:
        heatmaps = [heatmap for heatmap in heatmaps if allowance.heatmap(heatmap.method)]
    audit_service.record_when_read(
        session, action="view", user_id=user_id, object_type="prediction", object_id=prediction.id, ip=ip,
        detail={"instance_id": instance.id},
    )
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
        heatmaps=[HeatmapRef.model_validate(heatmap) for heatmap in heatmaps],
        similar_cases=prediction.similar_cases if allowance is None or allowance.similar_cases else None,
        concepts=prediction.concepts if allowance is None or allowance.concepts else None,
    )


def similar_thumbnail(session: Session, *, prediction_id: int, rank: int, user_id: int) -> bytes:
    """The PNG thumbnail of the prediction's similar case at `rank` (1: the nearest): NotFound if there is none,
    Blinded while a reader study hides the similar cases of this image from the user."""
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise NotFound(f"prediction {prediction_id} does not exist")
    allowance = visibility.instance_allowance(session, user_id=user_id, instance_id=prediction.instance_id)
    if allowance is not None and not allowance.similar_cases:
        raise visibility.Blinded(
            f"this image is a case of reader study {allowance.study_name!r} that you have not read yet; "
            "its similar cases are not part of its condition"
        )
    thumbnails = prediction.similar_thumbnails or []
    if not 1 <= rank <= min(len(prediction.similar_cases or []), len(thumbnails)):
        raise NotFound(f"prediction {prediction_id} has no similar case ranked {rank}")
    return base64.b64decode(thumbnails[rank - 1])


def visible_heatmap(session: Session, *, heatmap_id: int, user_id: int) -> Heatmap:
    """The heatmap with its array: NotFound if it does not exist, Blinded while a reader study hides this
    method of this image from the user."""
    heatmap = session.get(Heatmap, heatmap_id)
    if heatmap is None:
        raise NotFound(f"heatmap {heatmap_id} does not exist")
    visibility.check_heatmap(
        session, user_id=user_id, instance_id=heatmap.prediction.instance_id, method=heatmap.method
    )
    return heatmap
