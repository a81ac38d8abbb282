"""Admin JSON routes: the installed models with their cards' test metrics."""

from __future__ import annotations

from fastapi import APIRouter

from app.admin import service as admin_service
from app.admin.schemas import ModelOut
from app.auth.dependencies import IsAdmin
from app.db import DbSession

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/models", response_model=list[ModelOut])
def list_models(session: DbSession, _admin: IsAdmin) -> list[ModelOut]:
    """Every registered model: task, labels, calibration, referral threshold, weights and test metrics."""
    return admin_service.list_models(session)
