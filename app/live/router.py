"""Live updates of a study's AI (a server-sent event stream, and the same as one answer for pages that poll) and
of the caller's worklist rows (a stream; the worklist page polls /api/worklist where it cannot hold one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from app.auth.dependencies import CanRead, CurrentCaller
from app.bounds import DbId
from app.db import DbSession
from app.live import service as live_service
from app.live import streams as live_streams
from app.live.schemas import LiveSnapshot

router = APIRouter(tags=["live"])

_ERRORS: dict[int | str, dict[str, object]] = {
    403: {"description": "you have reads of this study pending in a reader study"},
    404: {"description": "no such study"},
}
_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy buffering either


def _streams(request: Request) -> live_streams.LiveStreams:
    return request.app.state.live_streams


Streams = Annotated[live_streams.LiveStreams, Depends(_streams)]


# Not in the OpenAPI schema: Swagger UI's "Try it out" and schema-driven clients wait for the end of an answer,
# which a stream of a running job does not reach for minutes. docs/api.md ("Live updates") describes it.
@router.get("/studies/{study_id}/events", response_class=StreamingResponse, include_in_schema=False)
def study_events(
    study_id: DbId,
    _user: CanRead,
    caller: CurrentCaller,
    session: DbSession,
    streams: Streams,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
) -> StreamingResponse:
    """Server-sent events whenever the study's AI state or results change; ends after 5 minutes (reconnect)."""
    live_service.check_open(session, study_id=study_id, user_id=caller.user.id)
    streams.check_room(user_id=caller.user.id)
    body = live_streams.study_events(
        streams,
        study_id=study_id,
        user_id=caller.user.id,
        auth_session_id=caller.auth_session.id,
        last_event_id=last_event_id,
    )
    return StreamingResponse(body, media_type="text/event-stream", headers=_STREAM_HEADERS)


# Not in the schema either, for the same reason; app.main includes this router before the viewer's, whose
# /api/worklist/{study_id} would take "events" for a study id.
@router.get("/worklist/events", response_class=StreamingResponse, include_in_schema=False)
def worklist_events(
    _user: CanRead,
    caller: CurrentCaller,
    streams: Streams,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
) -> StreamingResponse:
    """Server-sent events whenever the caller's worklist rows change (AI state, labels, queue places, new
    studies); ends after 5 minutes (reconnect)."""
    streams.check_room(user_id=caller.user.id)
    body = live_streams.worklist_events(
        streams, user_id=caller.user.id, auth_session_id=caller.auth_session.id, last_event_id=last_event_id
    )
    return StreamingResponse(body, media_type="text/event-stream", headers=_STREAM_HEADERS)


@router.get("/studies/{study_id}/ai", response_model=LiveSnapshot, responses=_ERRORS)
def study_ai(study_id: DbId, user: CanRead, session: DbSession) -> LiveSnapshot:
    """The study's AI state and results at once: what a page polls when it cannot hold the stream open."""
    return live_service.snapshot(session, study_id=study_id, user=user)
