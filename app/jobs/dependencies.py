"""Get-or-404 of a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.bounds import DbId
from app.db import DbSession
from app.jobs import service as jobs_service
from app.tables import Job


def _job_or_404(job_id: DbId, session: DbSession) -> Job:
    return jobs_service.get_job(session, job_id=job_id)


JobOr404 = Annotated[Job, Depends(_job_or_404)]
