"""Job routes: state, progress and error of one job."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from app.auth.dependencies import CanRead
from app.db import DbSession
from app.jobs import service as jobs_service
from app.jobs.schemas import ExplainRequest, JobOut

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: int, session: DbSession, _user: CanRead) -> JobOut:
    """One job's state, progress (0-100) and error text."""
    try:
        return JobOut.model_validate(jobs_service.get_job(session, job_id=job_id))
    except jobs_service.JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.post("/jobs", response_model=JobOut, status_code=status.HTTP_201_CREATED)
def request_explanations(request: ExplainRequest, session: DbSession, _user: CanRead) -> JobOut:
    """Queue a job computing these methods' heatmaps for an instance (sent to the workers after commit)."""
    try:
        job = jobs_service.request_explanations(session, instance_id=request.instance_id, methods=request.methods)
    except jobs_service.JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except jobs_service.JobRequestError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return JobOut.model_validate(job)
