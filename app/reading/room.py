"""The reading room page's data: the study's images, the model's output beside each, the forms' questions
and the reader's own draft."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import visibility
from app.audit import service as audit_service
from app.predictions import service as predictions_service
from app.reading import service as reading_service
from app.reading import vocabulary
from app.reading.schemas import (
    Assistance,
    Choice,
    FormConfig,
    HeatmapInfo,
    ReadingInstance,
    ReadingView,
    Uncertainty,
)
from app.tables import Instance, Prediction, Series, User
from app.viewer import service as viewer_service
from app.viewer.schemas import LabelProbability

_COLOUR_PHOTOMETRICS = ("RGB", "YBR", "PALETTE")


def uncertainty_of(*, entropy: float | None, threshold: float | None, referral: bool) -> Uncertainty:
    """The model's uncertainty in plain words, against its referral threshold."""
    if referral:
        above = f", above this model's referral threshold ({threshold:.2f})" if threshold is not None else ""
        value = f"{entropy:.2f} entropy" if entropy is not None else "flagged for referral"
        text = f"Uncertain: {value}{above}. Read carefully; consider referral."
        return Uncertainty(level="uncertain", text=text, entropy=entropy, threshold=threshold)
    if entropy is None:
        return Uncertainty(level="unknown", text="No uncertainty estimate for this prediction.", entropy=None,
                           threshold=threshold)
    if threshold is None:
        text = f"Entropy {entropy:.2f}; this model has no referral threshold."
        return Uncertainty(level="unknown", text=text, entropy=entropy, threshold=None)
    text = f"Confident: {entropy:.2f} entropy, below this model's referral threshold ({threshold:.2f})."
    return Uncertainty(level="confident", text=text, entropy=entropy, threshold=threshold)


def form_config(kind: str) -> FormConfig:
    return FormConfig(
        kind=kind,
        grades=[Choice(value=value, label=key.upper() if key == "pdr" else key.capitalize(), hint=label)
                for value, key, label in vocabulary.ICDR_GRADES],
        findings=[Choice(value=key, label=label) for key, label in vocabulary.FINDINGS],
        confidence=[Choice(value=value, label=label) for value, label in vocabulary.CONFIDENCE],
        questions=[Choice(value=key, label=label) for key, label in vocabulary.RATING_QUESTIONS],
        likert=[Choice(value=value, label=label) for value, label in vocabulary.LIKERT],
    )


def _assistance(prediction: Prediction, *, rated: set[int]) -> Assistance:
    labels = list(prediction.model.labels)

    def label_of(index: int) -> str:
        return labels[index] if 0 <= index < len(labels) else str(index)

    return Assistance(
        prediction_id=prediction.id,
        label=prediction.label,
        label_index=prediction.label_index,
        probabilities=[
            LabelProbability(label=label_of(index), probability=float(value))
            for index, value in enumerate(prediction.probabilities)
        ],
        model_name=prediction.model.name,
        model_version=prediction.model.version,
        referral=prediction.referral,
        uncertainty=uncertainty_of(
            entropy=prediction.predictive_entropy,
            threshold=prediction.model.uncertainty_threshold,
            referral=prediction.referral,
        ),
        heatmaps=[
            HeatmapInfo(
                id=heatmap.id,
                method=heatmap.method,
                method_label=vocabulary.method_label(heatmap.method),
                target_class=heatmap.target_class,
                target_label=label_of(heatmap.target_class),
                shape=list(heatmap.shape),
                value_min=heatmap.value_min,
                value_max=heatmap.value_max,
                signed=heatmap.value_min < 0 < heatmap.value_max,
                rated=heatmap.id in rated,
            )
            for heatmap in sorted(prediction.heatmaps, key=lambda row: (row.method, row.target_class))
        ],
    )


def reading_page(session: Session, *, study_id: int, user: User, ip: str) -> ReadingView:
    """The reading room of a clinical read for this user (Blinded while they have reader-study reads of the
    study pending: those are read from their queue; identity as their role shows it), its view audited once the
    request commits."""
    visibility.check_study_page(session, user_id=user.id, study_id=study_id)
    view = reading_view(session, study_id=study_id, reader_id=user.id, identity=visibility.identity_rule(user.role))
    audit_service.record_when_read(
        session, action="view", user_id=user.id, object_type="study", object_id=study_id, ip=ip
    )
    return view


def reading_view(
    session: Session, *, study_id: int, reader_id: int, identity: visibility.IdentityRule
) -> ReadingView:
    """The study's images with the model's output for each, the form to fill and the reader's read; identity
    as the visibility service's rule shows it."""
    summary = viewer_service.worklist_row(session, study_id=study_id, identity=identity)
    rows = session.execute(
        select(Instance, Series.description)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == study_id)
        .order_by(Series.number.nulls_last(), Series.id, Instance.number.nulls_last(), Instance.id)
    ).all()
    predictions = predictions_service.latest_predictions(session, instance_ids=[instance.id for instance, _ in rows])
    heatmap_ids = [heatmap.id for prediction in predictions.values() for heatmap in prediction.heatmaps]
    rated = reading_service.rated_heatmaps(session, reader_id=reader_id, heatmap_ids=heatmap_ids)
    instances = [
        ReadingInstance(
            id=instance.id,
            modality=instance.modality,
            description=identity.free_text(description),
            number=instance.number,
            frames=instance.frames,
            rows=instance.rows,
            columns=instance.columns,
            photometric=instance.photometric,
            colour=instance.samples_per_pixel > 1 or instance.photometric.upper().startswith(_COLOUR_PHOTOMETRICS),
            assistance=_assistance(predictions[instance.id], rated=rated) if instance.id in predictions else None,
        )
        for instance, description in rows
    ]
    modality = instances[0].modality if instances else summary.modality
    return ReadingView(
        study=summary,
        instances=instances,
        form=form_config(vocabulary.form_for(modality or summary.modality)),
        read=reading_service.latest_read(session, reader_id=reader_id, study_id=study_id),
    )
