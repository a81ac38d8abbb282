"""The reading room page: viewer, assistance panel, grading and rating forms."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from app.audit.dependencies import ClientIp
from app.auth.dependencies import PageCaller
from app.bounds import DbId
from app.db import DbSession
from app.reading import room

router = APIRouter(tags=["pages"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")


@router.get("/studies/{study_id}/read", include_in_schema=False)
def reading_page(request: Request, study_id: DbId, caller: PageCaller, session: DbSession, ip: ClientIp) -> Response:
    """Read one study: the image with window/level, the AI assistance beside it, and the grading form."""
    view = room.reading_page(session, study_id=study_id, user=caller.user, ip=ip)
    context = {"caller": caller, "csrf_token": caller.auth_session.csrf_token, "view": view}
    return templates.TemplateResponse(request, "reading/read.html", context)
