"""Liveness and readiness for the orchestrator (compose healthcheck, Kubernetes probes). No sign-in."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from app.config import get_settings
from app.health import service as health_service
from app.health.schemas import Health, Liveness, Readiness

router = APIRouter(tags=["health"])

RETRY_AFTER_SECONDS = 5
_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "a component is down (Retry-After says when to ask again)"}
}


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    """Liveness: the process answers. Touches neither the database nor the broker."""
    return Liveness()


@router.get("/readyz", response_model=Readiness, responses=_DOWN)
def readyz(response: Response) -> Readiness:
    """Readiness: the database and the broker answer within a couple of seconds; 503 names what is down."""
    readiness = health_service.readiness(settings=get_settings())
    if readiness.status != Health.ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return readiness
