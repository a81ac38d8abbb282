"""Viewer pages: the worklist and the study page."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from app.audit.dependencies import ClientIp
from app.auth.dependencies import Caller, PageCaller
from app.bounds import DbId
from app.db import DbSession
from app.tables import Role
from app.viewer import service as viewer_service

logger = logging.getLogger(__name__)

router = APIRouter(tags=["pages"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")

_UPLOADERS = {Role.admin, Role.coordinator}


def _context(caller: Caller, **values: Any) -> dict[str, Any]:
    # Every signed-in page shows who is signed in and carries the session's CSRF token for forms and fetch().
    return {"caller": caller, "csrf_token": caller.auth_session.csrf_token, **values}


@router.get("/", include_in_schema=False)
def worklist_page(request: Request, caller: PageCaller, session: DbSession, ip: ClientIp) -> Response:
    """The worklist: newest studies first with their AI state; an upload form for coordinators and admins."""
    worklist = viewer_service.worklist_page(session, user=caller.user, ip=ip)
    context = _context(caller, worklist=worklist, can_upload=caller.user.role in _UPLOADERS)
    return templates.TemplateResponse(request, "viewer/worklist.html", context)


@router.get("/studies/{study_id}", include_in_schema=False)
def study_page(request: Request, study_id: DbId, caller: PageCaller, session: DbSession, ip: ClientIp) -> Response:
    """One study: its images, the AI prediction and heatmap overlays, and the state of its jobs."""
    view = viewer_service.study_page(session, study_id=study_id, user=caller.user, ip=ip)
    return templates.TemplateResponse(request, "viewer/study.html", _context(caller, study=view))
