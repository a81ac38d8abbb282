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
from app.errors import NotFound
from app.reading import beyond, room
from app.tables import AiModel

router = APIRouter(tags=["pages"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")


@router.get("/studies/{study_id}/read", include_in_schema=False)
def reading_page(request: Request, study_id: DbId, caller: PageCaller, session: DbSession, ip: ClientIp) -> Response:
    """Read one study: the image with window/level, the AI assistance beside it, and the grading form."""
    view = room.reading_page(session, study_id=study_id, user=caller.user, ip=ip)
    context = {"caller": caller, "csrf_token": caller.auth_session.csrf_token, "view": view}
    return templates.TemplateResponse(request, "reading/read.html", context)


@router.get("/models/{model_id}/concepts", include_in_schema=False)
def concept_page(request: Request, model_id: DbId, caller: PageCaller, session: DbSession) -> Response:
    """A model's concepts: what each concept vector was learnt from, how well it tells held-out examples from
    random ones, and which classes it drives (TCAV with its significance test)."""
    model = session.get(AiModel, model_id)
    if model is None:
        raise NotFound(f"model {model_id} does not exist")
    context = {"caller": caller, "csrf_token": caller.auth_session.csrf_token, "page": beyond.concept_page(model),
               "model": model}
    return templates.TemplateResponse(request, "reading/concepts.html", context)
