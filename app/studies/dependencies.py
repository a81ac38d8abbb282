"""Get-or-404 of a study and of one of its images, for the routes of every domain that takes their ids."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.bounds import DbId
from app.db import DbSession
from app.studies import service as studies_service
from app.tables import Instance, Study


def _study_or_404(study_id: DbId, session: DbSession) -> Study:
    return studies_service.get_study(session, study_id=study_id)


def _instance_or_404(instance_id: DbId, session: DbSession) -> Instance:
    return studies_service.get_instance(session, instance_id=instance_id)


StudyOr404 = Annotated[Study, Depends(_study_or_404)]
InstanceOr404 = Annotated[Instance, Depends(_instance_or_404)]
