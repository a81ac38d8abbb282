"""The reading room page's data: the study's images, the model's output beside each, the forms' questions
and the reader's own draft."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import visibility
from app.audit import service as audit_service
from app.predictions import service as predictions_service
from app.reading import beyond, vocabulary
from app.reading import service as reading_service
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


def _side_by_side(entropy: float, threshold: float) -> tuple[str, str]:
    """Both numbers with the same decimals, as few as show which is larger (2 to 6): 1.4885 and 1.4881 read
    "1.4885" and "1.4881", never "1.49" twice beside "above"."""
    for decimals in range(2, 7):
        shown = f"{entropy:.{decimals}f}", f"{threshold:.{decimals}f}"
        if shown[0] != shown[1] or entropy == threshold:
            return shown
    return f"{entropy:.6f}", f"{threshold:.6f}"


def measured_accuracy(card: dict, probability: float | None) -> str:
    """What the card measured for answers of this probability through the served pipeline (metrics.served
    .reliability): "On its N test images answered with 40-50%, the model was right 34% of the time." or ""."""
    served = (card.get("metrics") or {}).get("served") or {}
    if probability is None:
        return ""
    for band in served.get("reliability") or []:
        low, high = float(band["low"]), float(band["high"])
        if low <= probability < high or (probability == high == 1.0):
            return (f" On its {band['n']} test images answered with {low:.0%}-{high:.0%}, the model was right "
                    f"{float(band['accuracy']):.0%} of the time.")
    return ""


def uncertainty_of(
    *, entropy: float | None, threshold: float | None, referral: bool, top_probability: float | None = None,
    rule: str = "", measured: str = "",
) -> Uncertainty:
    """The model's uncertainty in plain words, against its referral threshold (referred when the entropy is above
    it, as models/uncertainty.py decides). Never "confident": a prediction below the threshold is only not
    referred, and its top probability says how likely the model itself thinks it is right. `rule`: the card's
    sentence on how the threshold was set."""
    why = f" {rule}" if rule else ""
    if referral:
        if entropy is not None and threshold is not None:
            value, limit = _side_by_side(entropy, threshold)
            text = (f"Refer or read carefully: the model is unsure of this image (entropy {value}, above its "
                    f"referral threshold {limit}).{why}")
        else:
            text = f"Refer or read carefully: the model flagged this image as uncertain.{why}"
        return Uncertainty(level="uncertain", text=text, entropy=entropy, threshold=threshold)
    odds = ""
    if top_probability is not None:
        odds = f" Its answer has a calibrated probability of {top_probability:.0%}"
        odds += ": by its own estimate more likely wrong than right." if top_probability < 0.5 else "."
    odds += measured
    if entropy is None:
        return Uncertainty(level="unknown", text=f"No uncertainty estimate for this prediction.{odds}", entropy=None,
                           threshold=threshold)
    if threshold is None:
        text = f"Entropy {entropy:.2f}; this model has no referral threshold.{odds}"
        return Uncertainty(level="unknown", text=text, entropy=entropy, threshold=None)
    value, limit = _side_by_side(entropy, threshold)
    text = f"Not flagged for referral (entropy {value}, at or below its referral threshold {limit}).{odds}{why}"
    return Uncertainty(level="not_referred", text=text, entropy=entropy, threshold=threshold)


def form_config(kind: str, *, finding: str = "") -> FormConfig:
    """The choices of the read form `kind` (vocabulary.FORM_FIELDS): the chest form's findings are not the
    generic form's, and the presence form asks whether `finding` is present."""
    return FormConfig(
        kind=kind,
        question=vocabulary.finding_question(finding) if kind == "presence" and finding else "",
        grades=[Choice(value=value, label=key.upper() if key == "pdr" else key.capitalize(), hint=label)
                for value, key, label in vocabulary.ICDR_GRADES],
        findings=[Choice(value=key, label=label)
                  for key, label in vocabulary.FINDINGS_OF_FORM.get(kind, vocabulary.CHEST_FINDINGS)],
        confidence=[Choice(value=value, label=label) for value, label in vocabulary.CONFIDENCE],
        questions=[Choice(value=key, label=label) for key, label in vocabulary.RATING_QUESTIONS],
        likert=[Choice(value=value, label=label) for value, label in vocabulary.LIKERT],
    )


def _referral_rule(card: dict) -> str:
    """What the card measured of its referral threshold, in one sentence, if it did (metrics.referral: the
    threshold is fitted on validation images; `referred_fraction` is the share of test images it refers)."""
    fraction = ((card.get("metrics") or {}).get("referral") or {}).get("referred_fraction")
    if isinstance(fraction, int | float):
        return f"The threshold was fitted on validation images; it refers {fraction:.0%} of the test images."
    return ""


def method_ranking(card: dict) -> dict[str, int]:
    """The model's methods by their place in its stored faithfulness ranking (card evaluation.explanations, from
    `lumen evaluate-explanations`), 1 for the best; empty where the card has none."""
    ranking = ((card.get("evaluation") or {}).get("explanations") or {}).get("ranking") or []
    return {str(method): place for place, method in enumerate(ranking, start=1)}


def _assistance(prediction: Prediction, *, rated: set[int]) -> Assistance:
    labels = list(prediction.model.labels)

    def label_of(index: int) -> str:
        return labels[index] if 0 <= index < len(labels) else str(index)

    ranks = method_ranking(prediction.model.card)
    top_probability = beyond.top_probability(prediction)
    # The best-ranked method first, so the reading room opens on it; unranked methods after, by name.
    heatmaps = sorted(
        prediction.heatmaps, key=lambda row: (ranks.get(row.method, len(ranks) + 1), row.method, row.target_class)
    )
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
        model_summary=str(prediction.model.card.get("summary") or ""),
        multilabel=prediction.model.task == "multilabel",
        referral=prediction.referral,
        uncertainty=uncertainty_of(
            entropy=prediction.predictive_entropy,
            threshold=prediction.model.uncertainty_threshold,
            referral=prediction.referral,
            top_probability=top_probability,
            rule=_referral_rule(prediction.model.card),
            measured=measured_accuracy(prediction.model.card, top_probability),
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
                rank=ranks.get(heatmap.method),
                scores=dict(heatmap.scores or {}),
            )
            for heatmap in heatmaps
        ],
        similar_cases=beyond.similar_cases(prediction),
        concepts=beyond.concepts(prediction),
        justification=beyond.justification_of(prediction, top_probability=top_probability),
    )


def instance_assistance(
    session: Session, *, instance_ids: list[int], reader_id: int
) -> tuple[dict[int, Assistance], dict[int, str]]:
    """The model's output on each of these images as the assistance panel shows it (by image id, those with a
    prediction), and why it said nothing on those its input-domain gate refused. The reading room renders it;
    app/live sends it again whenever a job commits more of it."""
    predictions = predictions_service.latest_predictions(session, instance_ids=instance_ids)
    refusals = predictions_service.domain_refusals(session, instance_ids=instance_ids, predictions=predictions)
    heatmap_ids = [heatmap.id for prediction in predictions.values() for heatmap in prediction.heatmaps]
    rated = reading_service.rated_heatmaps(session, reader_id=reader_id, heatmap_ids=heatmap_ids)
    return {image: _assistance(prediction, rated=rated) for image, prediction in predictions.items()}, refusals


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
    assistance, refusals = instance_assistance(
        session, instance_ids=[instance.id for instance, _ in rows], reader_id=reader_id
    )
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
            assistance=assistance.get(instance.id),
            refusal=refusals.get(instance.id),
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
