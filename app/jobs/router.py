"""Job routes: state, progress and error of one job."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.auth.dependencies import CanRead
from app.db import DbSession
from app.jobs import service as jobs_service
from app.jobs.dependencies import JobOr404
from app.jobs.schemas import ExplainRequest, JobOut

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(_user: CanRead, job: JobOr404) -> JobOut:
    """One job's state, progress (0-100) and error text."""
    return JobOut.model_validate(job)


@router.post("/jobs", response_model=JobOut, status_code=status.HTTP_201_CREATED)
def request_explanations(request: ExplainRequest, session: DbSession, _user: CanRead) -> JobOut:
    """Queue a job computing these methods' heatmaps for an instance (sent to the workers after commit)."""
    job = jobs_service.request_explanations(session, instance_id=request.instance_id, methods=request.methods)
    return JobOut.model_validate(job)
