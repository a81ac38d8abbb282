"""Studies: the one list of studies (newest first), one study or image, and the API shapes of an upload."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app import visibility
from app.audit import service as audit_service
from app.errors import NotFound
from app.ingest import service as ingest_service
from app.studies.schemas import InstanceOut, StudyFields, StudyOut, StudySummary, UploadOut
from app.tables import Instance, Job, Role, Series, Study, User


class StudyNotFound(NotFound):
    """No study with this id."""

    def __init__(self, study_id: int) -> None:
        super().__init__(f"study {study_id} does not exist", what=f"Study {study_id}")


def newest_studies(session: Session, *, limit: int, offset: int = 0) -> list[Study]:
    """Studies newest first, with their jobs (for their AI state): the studies API and the worklist list these."""
    return list(
        session.scalars(
            select(Study)
            .options(selectinload(Study.jobs))
            .order_by(Study.created_at.desc(), Study.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )


def instance_counts(session: Session, *, study_ids: Sequence[int]) -> dict[int, int]:
    """How many images each of these studies has (a study without any is left out)."""
    rows = session.execute(
        select(Series.study_id, func.count(Instance.id))
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id.in_(study_ids))
        .group_by(Series.study_id)
    ).all()
    return {study_id: count for study_id, count in rows}


def _fields(study: Study, identity: visibility.IdentityRule) -> dict:
    """The API fields of a study row, its UID and description only where the identity rule shows them."""
    fields = StudyFields.model_validate(study).model_copy(
        update={"study_instance_uid": identity.uid(study.study_instance_uid),
                "description": identity.free_text(study.description)}
    )
    return fields.model_dump()


def list_studies(session: Session, *, role: Role, limit: int = 100, offset: int = 0) -> list[StudySummary]:
    """Studies newest first, with their number of instances; identity as this role sees it."""
    studies = newest_studies(session, limit=limit, offset=offset)
    counts = instance_counts(session, study_ids=[study.id for study in studies])
    identity = visibility.identity_rule(role)
    return [StudySummary(**_fields(study, identity), instance_count=counts.get(study.id, 0)) for study in studies]


def get_study(session: Session, *, study_id: int) -> Study:
    """The study with its series and instances loaded, or StudyNotFound."""
    study = session.scalar(
        select(Study).where(Study.id == study_id).options(selectinload(Study.series).selectinload(Series.instances))
    )
    if study is None:
        raise StudyNotFound(study_id)
    return study


def get_instance(session: Session, *, instance_id: int) -> Instance:
    """The instance (one image of a study), or NotFound."""
    instance = session.get(Instance, instance_id)
    if instance is None:
        raise NotFound(f"instance {instance_id} does not exist")
    return instance


def study_detail(session: Session, *, study: Study, user: User, ip: str) -> StudyOut:
    """One study with all its instances (ordered by series and instance number) and all its job ids, identity
    as the user's role sees it; audited once the request commits."""
    instances = sorted(
        (instance for series in study.series for instance in series.instances),
        key=lambda i: (i.series.number or 0, i.series_id, i.number or 0, i.id),
    )
    job_ids = list(session.scalars(select(Job.id).where(Job.study_id == study.id).order_by(Job.id)))
    out = _study_out(
        study, instances=[(i, False) for i in instances], job_ids=job_ids, identity=visibility.identity_rule(user.role)
    )
    audit_service.record_when_read(
        session, action="view", user_id=user.id, object_type="study", object_id=study.id, ip=ip,
        detail={"via": "api"},
    )
    return out


def upload_out(result: ingest_service.IngestResult, *, role: Role) -> UploadOut:
    """The response of an upload: its first study, and all the studies it touched (identity as `role` sees it)."""
    identity = visibility.identity_rule(role)
    studies = [
        _study_out(outcome.study, instances=outcome.instances, job_ids=outcome.job_ids, identity=identity)
        for outcome in result.studies
    ]
    return UploadOut(**studies[0].model_dump(), studies=studies)


def _study_out(
    study: Study, *, instances: list[tuple[Instance, bool]], job_ids: list[int], identity: visibility.IdentityRule
) -> StudyOut:
    return StudyOut(
        **_fields(study, identity),
        instances=[
            InstanceOut.model_validate(instance).model_copy(
                update={"duplicate": duplicate, "sop_instance_uid": identity.uid(instance.sop_instance_uid)}
            )
            for instance, duplicate in instances
        ],
        job_ids=job_ids,
    )
