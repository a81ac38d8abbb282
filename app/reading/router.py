"""Reading API: drafts autosaved and reads submitted once, explanation ratings, assistance events."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Form, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.audit.dependencies import ClientIp
from app.auth.dependencies import CanRead
from app.db import DbSession
from app.reading import service as reading_service
from app.reading.dependencies import MyReadOr404
from app.reading.schemas import AssistanceEventsIn, AssistanceEventsOut, RatingIn, RatingOut, ReadIn, ReadOut

router = APIRouter(tags=["reading"])

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"description": "no such read of yours"},
    409: {"description": "the read was submitted already"},
    422: {"description": "invalid answers, or an unknown study, image or heatmap"},
}


def _created(response: Response, created: bool) -> None:
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK


@router.put("/reads/{client_id}", response_model=ReadOut, responses=_ERRORS)
def save_draft(client_id: UUID, body: ReadIn, user: CanRead, session: DbSession, response: Response) -> ReadOut:
    """Autosave: create (201) or update (200) the caller's draft read; 409 once it was submitted."""
    read, created = reading_service.save_draft(session, reader_id=user.id, client_id=client_id, data=body)
    _created(response, created)
    return read


@router.post("/reads/{client_id}/draft", response_model=ReadOut, responses=_ERRORS)
def save_draft_beacon(
    client_id: UUID, draft: Annotated[str, Form()], user: CanRead, session: DbSession, response: Response
) -> ReadOut:
    """The autosave of a page being left (navigator.sendBeacon, which can only POST a form): the draft as JSON
    in the form field `draft`, the CSRF token in the field `csrf_token`. Same answers as PUT."""
    try:
        data = ReadIn.model_validate_json(draft)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    read, created = reading_service.save_draft(session, reader_id=user.id, client_id=client_id, data=data)
    _created(response, created)
    return read


@router.post("/reads/{client_id}/submit", response_model=ReadOut, responses=_ERRORS)
def submit_read(
    client_id: UUID, body: ReadIn, user: CanRead, session: DbSession, response: Response, ip: ClientIp
) -> ReadOut:
    """Submit the read (201); sending the same client id again returns the stored read (200), no duplicate."""
    read, created = reading_service.submit_read(session, reader_id=user.id, client_id=client_id, data=body, ip=ip)
    _created(response, created)
    return read


@router.get("/reads/{client_id}", response_model=ReadOut, responses=_ERRORS)
def get_read(_user: CanRead, read: MyReadOr404) -> ReadOut:
    """One of the caller's reads."""
    return read


@router.post("/ratings", response_model=RatingOut, responses=_ERRORS)
def rate_explanation(body: RatingIn, user: CanRead, session: DbSession, response: Response) -> RatingOut:
    """Rate a heatmap on the Likert questions (201); the same client id again returns the stored rating (200)."""
    rating, created = reading_service.rate_explanation(session, reader_id=user.id, data=body)
    _created(response, created)
    return rating


@router.post(
    "/assistance-events", response_model=AssistanceEventsOut, status_code=status.HTTP_201_CREATED, responses=_ERRORS
)
def record_events(body: AssistanceEventsIn, user: CanRead, session: DbSession) -> AssistanceEventsOut:
    """Store a batch of assistance events (shown, hidden, method changed...) of the caller."""
    stored = reading_service.record_events(session, reader_id=user.id, events=body.events)
    return AssistanceEventsOut(stored=stored)
