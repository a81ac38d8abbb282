"""Queries of the viewer: the worklist, the study page, and the rows behind images and heatmaps."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer, selectinload

from app.jobs import service as jobs_service
from app.tables import AiState, Heatmap, Instance, Job, Prediction, Series, Study
from app.viewer.schemas import (
    HeatmapView,
    InstanceView,
    JobView,
    LabelProbability,
    PredictionView,
    StudyView,
    Worklist,
    WorklistRow,
)

_ACTIVE = {AiState.queued.value, AiState.running.value}


class NotFound(LookupError):
    """The study, instance or heatmap does not exist; the message is safe to show."""


def _format_date(value: str) -> str:
    # DICOM DA is YYYYMMDD; anything else is shown as stored.
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value


def _instance_counts(session: Session, *, study_ids: Sequence[int]) -> dict[int, int]:
    rows = session.execute(
        select(Series.study_id, func.count(Instance.id))
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id.in_(study_ids))
        .group_by(Series.study_id)
    ).all()
    return {study_id: count for study_id, count in rows}


def _referrals(session: Session, *, study_ids: Sequence[int]) -> set[int]:
    rows = session.scalars(
        select(Job.study_id)
        .join(Prediction, Prediction.job_id == Job.id)
        .where(Job.study_id.in_(study_ids), Prediction.referral.is_(True))
        .distinct()
    )
    return set(rows)


def _predicted_labels(session: Session, *, study_ids: Sequence[int]) -> dict[int, str]:
    rows = session.execute(
        select(Job.study_id, Prediction.label)
        .join(Prediction, Prediction.job_id == Job.id)
        .where(Job.study_id.in_(study_ids))
        .order_by(Prediction.id)
    ).all()
    labels: dict[int, list[str]] = defaultdict(list)
    for study_id, label in rows:
        if label not in labels[study_id]:
            labels[study_id].append(label)
    return {study_id: ", ".join(values) for study_id, values in labels.items()}


def _rows(session: Session, *, studies: Sequence[Study]) -> list[WorklistRow]:
    ids = [study.id for study in studies]
    counts = _instance_counts(session, study_ids=ids)
    labels = _predicted_labels(session, study_ids=ids)
    referrals = _referrals(session, study_ids=ids)
    rows = []
    for study in studies:
        summary = jobs_service.summarise(list(study.jobs))
        rows.append(
            WorklistRow(
                id=study.id,
                patient_name=study.patient_name,
                patient_id=study.patient_id,
                study_date=_format_date(study.study_date),
                description=study.description,
                modality=study.modality,
                instances=counts.get(study.id, 0),
                ai_state=summary.state,
                ai_progress=summary.progress,
                ai_error=summary.error,
                ai_label=labels.get(study.id) if summary.state == AiState.done.value else None,
                ai_referral=study.id in referrals,
                uploaded_at=study.created_at,
            )
        )
    return rows


def list_worklist(session: Session, *, limit: int = 200) -> Worklist:
    """The newest studies first, each with its AI state."""
    studies = session.scalars(
        select(Study).options(selectinload(Study.jobs)).order_by(Study.created_at.desc(), Study.id.desc()).limit(limit)
    ).all()
    rows = _rows(session, studies=studies)
    return Worklist(studies=rows, active=any(row.ai_state in _ACTIVE for row in rows))


def get_study(session: Session, *, study_id: int) -> Study:
    """The study, or NotFound."""
    study = session.get(Study, study_id, options=[selectinload(Study.jobs).selectinload(Job.model)])
    if study is None:
        raise NotFound(f"study {study_id} does not exist")
    return study


def worklist_row(session: Session, *, study_id: int) -> WorklistRow:
    """One study's worklist row (the study page polls it while its jobs run)."""
    return _rows(session, studies=[get_study(session, study_id=study_id)])[0]


def _latest_predictions(session: Session, *, instance_ids: Sequence[int]) -> dict[int, Prediction]:
    predictions = session.scalars(
        select(Prediction)
        .where(Prediction.instance_id.in_(instance_ids))
        # The heatmap arrays are not needed to list them; the PNG route loads one at a time.
        .options(selectinload(Prediction.heatmaps).options(defer(Heatmap.data)), selectinload(Prediction.model))
        .order_by(Prediction.id)
    ).all()
    return {prediction.instance_id: prediction for prediction in predictions}


def _label_of(labels: list[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else str(index)


def _prediction_view(prediction: Prediction) -> PredictionView:
    labels = list(prediction.model.labels)
    return PredictionView(
        id=prediction.id,
        label=prediction.label,
        probabilities=[
            LabelProbability(label=_label_of(labels, index), probability=float(value))
            for index, value in enumerate(prediction.probabilities)
        ],
        model_name=prediction.model.name,
        model_version=prediction.model.version,
        predictive_entropy=prediction.predictive_entropy,
        referral=prediction.referral,
        heatmaps=[
            HeatmapView(
                id=heatmap.id,
                method=heatmap.method,
                target_class=heatmap.target_class,
                target_label=_label_of(labels, heatmap.target_class),
            )
            for heatmap in sorted(prediction.heatmaps, key=lambda row: (row.method, row.target_class))
        ],
    )


def get_study_view(session: Session, *, study_id: int) -> StudyView:
    """The study page: fields, instances with their latest prediction and heatmaps, and jobs."""
    study = get_study(session, study_id=study_id)
    instances = session.execute(
        select(Instance, Series)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == study.id)
        .order_by(Series.number.nulls_last(), Series.id, Instance.number.nulls_last(), Instance.id)
    ).all()
    predictions = _latest_predictions(session, instance_ids=[instance.id for instance, _ in instances])
    return StudyView(
        summary=_rows(session, studies=[study])[0],
        patient_birth_date=_format_date(study.patient_birth_date),
        accession_number=study.accession_number,
        study_instance_uid=study.study_instance_uid,
        instances=[
            InstanceView(
                id=instance.id,
                series_description=series.description,
                modality=instance.modality,
                number=instance.number,
                frames=instance.frames,
                rows=instance.rows,
                columns=instance.columns,
                prediction=_prediction_view(predictions[instance.id]) if instance.id in predictions else None,
            )
            for instance, series in instances
        ],
        jobs=[
            JobView(
                id=job.id,
                instance_id=job.instance_id,
                model_name=job.model.name,
                model_version=job.model.version,
                state=job.state.value,
                progress=job.progress,
                error=job.error,
            )
            for job in sorted(study.jobs, key=lambda row: row.id)
        ],
    )


def get_instance(session: Session, *, instance_id: int) -> Instance:
    """The instance, or NotFound."""
    instance = session.get(Instance, instance_id)
    if instance is None:
        raise NotFound(f"instance {instance_id} does not exist")
    return instance


def get_heatmap(session: Session, *, heatmap_id: int) -> Heatmap:
    """The heatmap with its array, or NotFound."""
    heatmap = session.get(Heatmap, heatmap_id)
    if heatmap is None:
        raise NotFound(f"heatmap {heatmap_id} does not exist")
    return heatmap
