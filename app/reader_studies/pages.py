"""Reader-study pages: the list and design form, the coordinator dashboard, a reader's queue, and the
reading room in study mode (the same page as a clinical read, showing only what the condition allows)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.auth.dependencies import PageCaller
from app.bounds import DbId
from app.config import get_settings
from app.db import WRITES, DbSession
from app.reader_studies import assignments, results
from app.reader_studies import service as study_service
from app.reader_studies.schemas import ReaderStudyIn
from app.reading import vocabulary
from app.statistics import plots
from app.tables import ConditionKind, ReaderStudyState, Role, StudyTask
from models.explain.names import METHOD_NAMES  # torch-free

router = APIRouter(tags=["pages"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
_COORDINATORS = (Role.admin, Role.coordinator)


# The designer's words for each kind of condition: what the reader sees beside the image.
CONDITION_KINDS = (
    (ConditionKind.unassisted.value, "Unassisted (no AI)"),
    (ConditionKind.prediction.value, "Prediction only"),
    (ConditionKind.prediction_heatmap.value, "Prediction + heatmap"),
    (ConditionKind.prediction_similar.value, "Prediction + similar confirmed cases"),
    (ConditionKind.prediction_concepts.value, "Prediction + concept evidence"),
    (ConditionKind.prediction_justification.value, "Prediction + written justification"),
)


def _task_reads(task: StudyTask) -> str:
    """What a study of this task reads, for the designer ("" where it reads any image)."""
    wanted = vocabulary.TASK_IMAGES.get(task.value)
    return vocabulary.IMAGE_WORDS[wanted] if wanted else ""


def _context(caller) -> dict:
    return {"caller": caller, "csrf_token": caller.auth_session.csrf_token}


@router.get("/reader-studies", include_in_schema=False)
def list_page(request: Request, caller: PageCaller, session: DbSession) -> Response:
    """Coordinators: every study and a form for a new one. Readers: the studies they read in."""
    coordinator = caller.user.role in _COORDINATORS
    context = {
        **_context(caller),
        "coordinator": coordinator,
        "studies": study_service.list_studies(session) if coordinator else [],
        "mine": assignments.my_studies(session, user_id=caller.user.id),
        "defaults": ReaderStudyIn(name="x").model_dump(mode="json"),
        "questions": vocabulary.RATING_QUESTIONS,
        "kinds": CONDITION_KINDS,
        "methods": [(name, vocabulary.method_label(name)) for name in METHOD_NAMES],
        "tasks": [(task.value, vocabulary.TASK_WORDS[task.value], _task_reads(task)) for task in StudyTask],
        "findings": study_service.finding_choices(session, task=StudyTask.binary_finding) if coordinator else [],
    }
    return templates.TemplateResponse(request, "reader_studies/list.html", context)


@router.get("/reader-studies/{reader_study_id}", include_in_schema=False)
def dashboard_page(request: Request, reader_study_id: DbId, caller: PageCaller, session: DbSession) -> Response:
    """The coordinator dashboard: design, cases, readers, progress, results, plots, exports."""
    if caller.user.role not in _COORDINATORS:
        return RedirectResponse(f"/reader-studies/{reader_study_id}/queue", status_code=303)
    study = study_service.get_study(session, reader_study_id=reader_study_id)
    numbers = results.dashboard(session, study=study)
    charts = {
        "conditions": plots.conditions_svg(numbers["conditions"]),
        "time_course": plots.time_course_svg(numbers["time_course"]),
        "ratings": plots.ratings_svg(numbers["ratings"]["by_method"], list(vocabulary.RATING_QUESTIONS)),
    }
    candidates, not_shown = (
        study_service.candidate_cases(session, study=study, user=caller.user)
        if study.state == ReaderStudyState.draft
        else ([], 0)
    )
    context = {
        **_context(caller),
        "candidates": candidates,
        "not_shown": not_shown,
        "reads": _task_reads(study.task),
        "study": study_service.study_detail(session, study=study),
        "numbers": numbers,
        "charts": charts,
        "questions": dict(vocabulary.RATING_QUESTIONS),
        "finding_question": vocabulary.finding_question(study.finding) if study.finding else "",
        "finding_models": study_service.models_reporting(session, finding=study.finding),
        # Cases may come from the hospital's archive (app/archive) when one is configured.
        "archive_configured": bool(get_settings().archive_dicomweb_url),
    }
    return templates.TemplateResponse(request, "reader_studies/dashboard.html", context)


@router.get("/reader-studies/{reader_study_id}/queue", include_in_schema=False)
def queue_page(request: Request, reader_study_id: DbId, caller: PageCaller, session: DbSession) -> Response:
    """A reader's queue; `?go=next` jumps straight to the next open read."""
    study = study_service.get_study(session, reader_study_id=reader_study_id)
    queue = assignments.queue(session, study=study, user_id=caller.user.id)
    if request.query_params.get("go") == "next" and queue.next_url:
        return RedirectResponse(queue.next_url, status_code=303)
    return templates.TemplateResponse(request, "reader_studies/queue.html", {**_context(caller), "queue": queue})


@router.get("/assignments/{assignment_id}/read", include_in_schema=False, dependencies=[WRITES])
def assignment_page(request: Request, assignment_id: DbId, caller: PageCaller, session: DbSession) -> Response:
    """The reading room for one assignment, under its condition."""
    assignment = assignments.get_assignment(session, assignment_id=assignment_id, user_id=caller.user.id)
    view = assignments.assignment_view(session, assignment=assignment, user_id=caller.user.id)
    return templates.TemplateResponse(request, "reading/read.html", {**_context(caller), "view": view})
