"""Studies: the worklist, one study with its instances, and the API shapes of an upload's outcome."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app.ingest import service as ingest_service
from app.studies.schemas import InstanceOut, StudyOut, StudySummary, UploadOut
from app.tables import Instance, Job, Series, Study


class StudyNotFound(LookupError):
    pass


def list_studies(session: Session, *, limit: int = 100, offset: int = 0) -> list[StudySummary]:
    """Studies newest first, with their number of instances."""
    count = func.count(Instance.id)
    rows = session.execute(
        select(Study, count)
        .outerjoin(Series, Series.study_id == Study.id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .group_by(Study.id)
        .order_by(Study.created_at.desc(), Study.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [_summary(study, instance_count=n) for study, n in rows]


def get_study(session: Session, *, study_id: int) -> Study:
    """The study with its series and instances loaded, or StudyNotFound."""
    study = session.scalar(
        select(Study).where(Study.id == study_id).options(selectinload(Study.series).selectinload(Series.instances))
    )
    if study is None:
        raise StudyNotFound(f"study {study_id} does not exist")
    return study


def study_detail(session: Session, *, study_id: int) -> StudyOut:
    """One study with all its instances (ordered by series and instance number) and all its job ids."""
    study = get_study(session, study_id=study_id)
    instances = sorted(
        (instance for series in study.series for instance in series.instances),
        key=lambda i: (i.series.number or 0, i.series_id, i.number or 0, i.id),
    )
    job_ids = list(session.scalars(select(Job.id).where(Job.study_id == study.id).order_by(Job.id)))
    return _study_out(study, instances=[(i, False) for i in instances], job_ids=job_ids)


def upload_out(result: ingest_service.IngestResult) -> UploadOut:
    """The response of an upload: its first study, and all the studies it touched."""
    studies = [_outcome_out(outcome) for outcome in result.studies]
    return UploadOut(**studies[0].model_dump(), studies=studies)


def _outcome_out(outcome: ingest_service.StudyOutcome) -> StudyOut:
    return _study_out(outcome.study, instances=outcome.instances, job_ids=outcome.job_ids)


def _study_out(study: Study, *, instances: list[tuple[Instance, bool]], job_ids: list[int]) -> StudyOut:
    return StudyOut(
        id=study.id,
        study_instance_uid=study.study_instance_uid,
        modality=study.modality,
        description=study.description,
        study_date=study.study_date,
        created_at=study.created_at,
        instances=[
            InstanceOut.model_validate(instance).model_copy(update={"duplicate": duplicate})
            for instance, duplicate in instances
        ],
        job_ids=job_ids,
    )


def _summary(study: Study, *, instance_count: int) -> StudySummary:
    return StudySummary(
        id=study.id,
        study_instance_uid=study.study_instance_uid,
        modality=study.modality,
        description=study.description,
        study_date=study.study_date,
        created_at=study.created_at,
        instance_count=instance_count,
    )
