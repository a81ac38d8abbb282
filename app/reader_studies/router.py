"""Reader-study API: coordinators design, open, follow and export studies; readers work through their queue."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from app.audit.dependencies import ClientIp
from app.auth.dependencies import CanRead
from app.db import WRITES, DbSession
from app.reader_studies import assignments, evidence, export, reference, results
from app.reader_studies import service as study_service
from app.reader_studies.dependencies import CanCoordinate, MyAssignmentOr404, ReaderStudyOr404
from app.reader_studies.schemas import (
    CandidatesOut,
    CasesIn,
    FindingChoice,
    QueueOut,
    ReadersIn,
    ReaderStudyDetail,
    ReaderStudyIn,
    ReaderStudyOut,
    ReferenceUploadOut,
)
from app.reading.schemas import (
    AssistanceEventsIn,
    AssistanceEventsOut,
    RatingIn,
    RatingOut,
    ReadIn,
    ReadingView,
    ReadOut,
)
from app.tables import StudyTask

router = APIRouter(tags=["reader studies"])
MAX_CSV_BYTES = 5 * 1024 * 1024

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such reader study or assignment (of yours)"},
    409: {"description": "the study's state or the queue's order forbids this now"},
    422: {"description": "the request does not fit the study; the reason says what"},
}


def _status(response: Response, created: bool) -> None:
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK


@router.get("/reader-studies", response_model=list[ReaderStudyOut])
def list_studies(_user: CanCoordinate, session: DbSession) -> list[ReaderStudyOut]:
    """Every reader study, newest first."""
    return study_service.list_studies(session)


@router.post("/reader-studies", response_model=ReaderStudyDetail, status_code=201, responses=_ERRORS)
def create_study(body: ReaderStudyIn, user: CanCoordinate, session: DbSession) -> ReaderStudyDetail:
    """A new draft study (the default conditions are the three arms of Sayres et al. 2019)."""
    study = study_service.create_study(session, data=body, created_by_id=user.id)
    return study_service.study_detail(session, study=study)


@router.get("/reader-studies/finding-choices", response_model=list[FindingChoice])
def finding_choices(
    _user: CanCoordinate, session: DbSession,
    task: Annotated[StudyTask, Query(description="the study's task")] = StudyTask.binary_finding,
) -> list[FindingChoice]:
    """The findings whose probability the AI arms of a study of this task can show: the labels of the models
    served on its images (a binary-finding study may name another finding; its AI arms then show none of it)."""
    return study_service.finding_choices(session, task=task)


@router.get("/reader-studies/{reader_study_id}", response_model=ReaderStudyDetail, responses=_ERRORS)
def get_study(study: ReaderStudyOr404, _user: CanCoordinate, session: DbSession) -> ReaderStudyDetail:
    """The design, its cases (with reference) and its readers."""
    return study_service.study_detail(session, study=study)


@router.get("/reader-studies/{reader_study_id}/candidates", response_model=CandidatesOut, responses=_ERRORS)
def candidates(study: ReaderStudyOr404, user: CanCoordinate, session: DbSession) -> CandidatesOut:
    """Stored studies the study's task reads and that are not cases yet, newest first (the designer's picker)."""
    shown, others = study_service.candidate_cases(session, study=study, user=user)
    return CandidatesOut(candidates=shown, not_shown=others)


@router.post("/reader-studies/{reader_study_id}/cases", responses=_ERRORS)
def add_cases(body: CasesIn, study: ReaderStudyOr404, _user: CanCoordinate, session: DbSession) -> dict[str, int]:
    """Add stored studies as cases of a draft study."""
    return {"added": study_service.add_cases(session, study=study, study_ids=body.study_ids)}


async def _csv_text(request: Request) -> str:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        upload = (await request.form()).get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "send the CSV as the form field 'file'")
        raw = await upload.read(MAX_CSV_BYTES + 1)
    else:
        raw = await request.body()
    if len(raw) > MAX_CSV_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"a reference CSV is at most {MAX_CSV_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the reference CSV must be UTF-8 text") from exc


@router.post("/reader-studies/{reader_study_id}/reference", response_model=ReferenceUploadOut, responses=_ERRORS)
async def upload_reference(
    request: Request, study: ReaderStudyOr404, user: CanCoordinate, session: DbSession, ip: ClientIp,
    confirm: Annotated[bool, Query(description="apply changes to the reference of an open or closed study")] = False,
) -> ReferenceUploadOut:
    """The reference standard as CSV (study_instance_uid or study_id, then dr_grade[, dme] or finding).

    All rows are checked first; one bad row rejects the file and changes nothing. Changes to an open or closed
    study's reference answer 409 listing each case, old -> new, unless `confirm=true`; every change is audited.
    """
    text = await _csv_text(request)
    # The body is read on the event loop; the database work goes to the threadpool.
    added, references = await run_in_threadpool(
        lambda: reference.upload_reference(
            session, study=study, text=text, user_id=user.id, ip=ip, confirm=confirm
        )
    )
    return ReferenceUploadOut(cases_added=added, references_set=references)


@router.post("/reader-studies/{reader_study_id}/readers", responses=_ERRORS)
def add_readers(body: ReadersIn, study: ReaderStudyOr404, _user: CanCoordinate, session: DbSession) -> dict[str, int]:
    """Enrol users (by e-mail) as readers of a draft study."""
    return {"added": study_service.add_readers(session, study=study, emails=body.emails)}


@router.post("/reader-studies/{reader_study_id}/open", responses=_ERRORS)
def open_study(study: ReaderStudyOr404, user: CanCoordinate, session: DbSession, ip: ClientIp) -> dict[str, int]:
    """Freeze the design and write the assignments (seeded per-reader order)."""
    return {"assignments": study_service.open_study(session, study=study, user_id=user.id, ip=ip)}


@router.post("/reader-studies/{reader_study_id}/close", responses=_ERRORS)
def close_study(study: ReaderStudyOr404, _user: CanCoordinate, session: DbSession) -> dict[str, str]:
    """Stop reading; results and exports stay."""
    study_service.close_study(session, study=study)
    return {"state": study.state.value}


@router.get("/reader-studies/{reader_study_id}/queue", response_model=QueueOut, responses=_ERRORS)
def my_queue(study: ReaderStudyOr404, user: CanRead, session: DbSession) -> QueueOut:
    """The caller's assignments in order and the next one open."""
    return assignments.queue(session, study=study, user_id=user.id)


@router.get("/reader-studies/{reader_study_id}/statistics", responses=_ERRORS)
def statistics(study: ReaderStudyOr404, _user: CanCoordinate, session: DbSession) -> dict[str, Any]:
    """The dashboard's numbers: progress, results per condition, agreement, ratings, MRMC comparison."""
    return results.dashboard(session, study=study)


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


@router.get("/reader-studies/{reader_study_id}/export.csv", responses=_ERRORS)
def export_csv(request: Request, study: ReaderStudyOr404, user: CanCoordinate, session: DbSession) -> Response:
    """Every read in long format, pseudonymous (no patient name, id, birth date or accession number)."""
    rows = export.exported_rows(session, study=study, user_id=user.id, ip=_ip(request), kind="csv")
    filename = f"reader-study-{study.id}-reads.csv"
    return PlainTextResponse(export.to_csv(rows), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/reader-studies/{reader_study_id}/export.json", responses=_ERRORS)
def export_json(request: Request, study: ReaderStudyOr404, user: CanCoordinate, session: DbSession) -> Response:
    """The same reads as JSON, with the dashboard's statistics."""
    rows = export.exported_rows(session, study=study, user_id=user.id, ip=_ip(request), kind="json")
    body = {"study": study.name, "task": study.task.value, "finding": study.finding, "seed": study.seed,
            "scheme": study.scheme, "conditions": study.conditions, "reads": rows,
            "statistics": results.dashboard(session, study=study)}
    filename = f"reader-study-{study.id}.json"
    return JSONResponse(body, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/reader-studies/{reader_study_id}/evidence.csv", responses=_ERRORS)
def export_evidence_csv(
    request: Request, study: ReaderStudyOr404, user: CanCoordinate, session: DbSession,
    table: Annotated[evidence.Table, Query(description="heatmaps: one row per read and heatmap method, the read's "
                                           "marks against the map; pairs: one row per two readers' reads of a case, "
                                           "their Dice")] = "heatmaps",
) -> Response:
    """Readers' evidence marks against the heatmaps (relevance mass, pointing game, IoU at equal area) or between
    readers (Dice), in long format for analysis; pseudonymous like export.csv."""
    columns, rows = evidence.exported_rows(session, study=study, table=table, user_id=user.id, ip=_ip(request))
    filename = f"reader-study-{study.id}-evidence-{table}.csv"
    return PlainTextResponse(export.to_csv(rows, columns), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get(
    "/assignments/{assignment_id}", response_model=ReadingView, responses=_ERRORS, dependencies=[WRITES]
)
def get_assignment(assignment: MyAssignmentOr404, user: CanRead, session: DbSession) -> ReadingView:
    """The case as the reading room shows it: only what the assignment's condition allows."""
    return assignments.assignment_view(session, assignment=assignment, user_id=user.id)


@router.put("/assignments/{assignment_id}/reads/{client_id}", response_model=ReadOut, responses=_ERRORS)
def save_draft(client_id: UUID, body: ReadIn, assignment: MyAssignmentOr404, _user: CanRead, session: DbSession,
               response: Response) -> ReadOut:
    """Autosave the assignment's draft read."""
    read, created = assignments.save_draft(session, assignment=assignment, client_id=client_id, data=body)
    _status(response, created)
    return read


@router.post("/assignments/{assignment_id}/reads/{client_id}/submit", response_model=ReadOut, responses=_ERRORS)
def submit_read(client_id: UUID, body: ReadIn, assignment: MyAssignmentOr404, _user: CanRead, session: DbSession,
                response: Response, ip: ClientIp) -> ReadOut:
    """Submit the read and complete the assignment (201); the same client id again returns it (200)."""
    read, created = assignments.submit(session, assignment=assignment, client_id=client_id, data=body, ip=ip)
    _status(response, created)
    return read


@router.post("/assignments/{assignment_id}/ratings", response_model=RatingOut, responses=_ERRORS)
def rate(body: RatingIn, assignment: MyAssignmentOr404, _user: CanRead, session: DbSession,
         response: Response) -> RatingOut:
    """Rate the heatmap shown; in an explanation-rating study this completes the assignment."""
    rating, created = assignments.rate(session, assignment=assignment, data=body)
    _status(response, created)
    return rating


@router.post("/assignments/{assignment_id}/assistance-events", response_model=AssistanceEventsOut,
             status_code=201, responses=_ERRORS)
def record_events(body: AssistanceEventsIn, assignment: MyAssignmentOr404, _user: CanRead,
                  session: DbSession) -> AssistanceEventsOut:
    """Assistance shown, hidden or changed during this assignment, with times."""
    stored = assignments.record_events(session, assignment=assignment, events=body.events)
    return AssistanceEventsOut(stored=stored)
