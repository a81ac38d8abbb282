"""Job routes: state, progress and error of one job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from app.auth.dependencies import CanRead
from app.db import DbSession
from app.jobs import service as jobs_service
from app.jobs import timings
from app.jobs.dependencies import JobOr404
from app.jobs.schemas import ExplainRequest, JobOut

router = APIRouter(tags=["jobs"])

_REFUSALS: dict[int | str, dict[str, Any]] = {
    403: {"description": "a reader asked for an expensive method"},
    404: {"description": "no such instance"},
    422: {"description": "an unknown method or model, or a model whose domain does not take the image"},
    429: {"description": "as many expensive jobs of the caller queued or running as allowed (Retry-After)"},
}


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(_user: CanRead, job: JobOr404, session: DbSession) -> JobOut:
    """One job's state, progress (0-100), error text and its stage timings; while queued, its place in the
    queue and when a worker may take it."""
    return JobOut.model_validate(job).model_copy(update={"place": timings.queue_place(session, job)})


@router.post("/jobs", response_model=JobOut, status_code=status.HTTP_201_CREATED, responses=_REFUSALS)
def request_explanations(request: ExplainRequest, session: DbSession, user: CanRead) -> JobOut:
    """Queue a job computing these methods' heatmaps for an instance (sent to the workers after commit).

    Readers may ask only for single-pass methods (403); a coordinator or admin with as many expensive jobs
    queued or running as LUMEN_MAX_EXPENSIVE_JOBS_PER_USER gets 429 with Retry-After.
    """
    job = jobs_service.request_explanations(
        session, instance_id=request.instance_id, methods=request.methods, user_id=user.id, role=user.role,
        model_name=request.model,
    )
    session.flush()
    return JobOut.model_validate(job).model_copy(update={"place": timings.queue_place(session, job)})
