"""Queries of the viewer: the worklist and the study page, as far as the caller may see them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app import visibility
from app.audit import service as audit_service
from app.jobs import service as jobs_service
from app.predictions import service as predictions_service
from app.studies import service as studies_service
from app.tables import AiState, Instance, Job, Prediction, Series, Study
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


def _format_date(value: str) -> str:
    # DICOM DA is YYYYMMDD; anything else is shown as stored.
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value


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
    counts = studies_service.instance_counts(session, study_ids=ids)
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
    """The newest studies first, each with its AI state (all of it: for coordinators picking cases)."""
    rows = _rows(session, studies=studies_service.newest_studies(session, limit=limit))
    return Worklist(studies=rows, active=any(row.ai_state in _ACTIVE for row in rows))


def _redacted(row: WorklistRow) -> WorklistRow:
    return row.model_copy(update={"ai_label": None, "ai_referral": False})


def worklist_for(session: Session, *, user_id: int) -> Worklist:
    """The worklist as this user may see it: no model label or referral flag on the studies they still have to
    read in a reader study."""
    worklist = list_worklist(session)
    blinded = visibility.blinded_studies(session, user_id=user_id, study_ids=[row.id for row in worklist.studies])
    if not blinded:
        return worklist
    rows = [_redacted(row) if row.id in blinded else row for row in worklist.studies]
    return worklist.model_copy(update={"studies": rows})


def _study_with_jobs(session: Session, *, study_id: int) -> Study:
    """The study with its jobs and their models (what the worklist and the study page show), or StudyNotFound."""
    study = session.get(Study, study_id, options=[selectinload(Study.jobs).selectinload(Job.model)])
    if study is None:
        raise studies_service.StudyNotFound(study_id)
    return study


def worklist_row(session: Session, *, study_id: int) -> WorklistRow:
    """One study's worklist row, all of it (the reading room shows it; a reader study blinds it there)."""
    return _rows(session, studies=[_study_with_jobs(session, study_id=study_id)])[0]


def worklist_row_for(session: Session, *, study_id: int, user_id: int) -> WorklistRow:
    """One study's worklist row as this user may see it (the study page polls it while its jobs run)."""
    row = worklist_row(session, study_id=study_id)
    return _redacted(row) if visibility.blinded_studies(session, user_id=user_id, study_ids=[study_id]) else row


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


def study_page(session: Session, *, study_id: int, user_id: int, ip: str) -> StudyView:
    """The study page for this user (Blinded while they have reader-study reads of it pending), its view
    audited once the request commits."""
    visibility.check_study_page(session, user_id=user_id, study_id=study_id)
    view = _study_view(session, study_id=study_id)
    audit_service.record_when_read(
        session, action="view", user_id=user_id, object_type="study", object_id=study_id, ip=ip
    )
    return view


def _study_view(session: Session, *, study_id: int) -> StudyView:
    """The study page: fields, instances with their latest prediction and heatmaps, and jobs."""
    study = _study_with_jobs(session, study_id=study_id)
    instances = session.execute(
        select(Instance, Series)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == study.id)
        .order_by(Series.number.nulls_last(), Series.id, Instance.number.nulls_last(), Instance.id)
    ).all()
    predictions = predictions_service.latest_predictions(
        session, instance_ids=[instance.id for instance, _ in instances]
    )
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
