"""The reading room page: viewer, assistance panel, grading and rating forms."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, status
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from app.audit import service as audit_service
from app.auth.dependencies import PageCaller
from app.db import DbSession
from app.reader_studies import access as study_access
from app.reading import room
from app.viewer import service as viewer_service

router = APIRouter(tags=["pages"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")


@router.get("/studies/{study_id}/read", include_in_schema=False)
def reading_page(request: Request, study_id: int, caller: PageCaller, session: DbSession) -> Response:
    """Read one study: the image with window/level, the AI assistance beside it, and the grading form."""
    context = {"caller": caller, "csrf_token": caller.auth_session.csrf_token}
    try:
        study_access.check_study_page(session, user_id=caller.user.id, study_id=study_id)
    except study_access.Blinded as exc:
        return templates.TemplateResponse(
            request, "reader_studies/refused.html", {**context, "reason": str(exc)},
            status_code=status.HTTP_403_FORBIDDEN,
        )
    try:
        view = room.reading_view(session, study_id=study_id, reader_id=caller.user.id)
    except viewer_service.NotFound:
        return templates.TemplateResponse(
            request, "viewer/not_found.html", {**context, "what": f"Study {study_id}"},
            status_code=status.HTTP_404_NOT_FOUND,
        )
    audit_service.record_when_read(
        session,
        action="view",
        user_id=caller.user.id,
        object_type="study",
        object_id=study_id,
        ip=request.client.host if request.client else "",
    )
    return templates.TemplateResponse(request, "reading/read.html", {**context, "view": view})
