"""Server-sent event streams of one API process: bounded in number, each short-lived, ended at once on shutdown.
Two kinds: one study's AI (`study_events`), and the caller's worklist rows (`worklist_events`).

A stream holds no thread and no database connection while it waits: each look at the database (about one a
second) runs in the threadpool in its own read-only unit of work, and between looks the stream awaits its
stop event with a timeout. A study's stream ends once no job of the study is queued or running (after the
events that say so: nothing more will come); a worklist's goes on (new studies may come), looking every
IDLE_LOOK_SECONDS while none of its studies is queued or running. Either ends after MAX_LIFETIME_SECONDS (the
browser's EventSource reconnects after `retry:`, sending the last event id, so nothing already seen is sent
again), when its caller is refused, or when the server is told to stop: uvicorn waits for open responses
before it exits, so on SIGTERM or SIGINT every stream's stop event is set and the server goes down as fast as
without them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from types import FrameType
from typing import Any

from anyio import to_thread

from app.db import session_scope
from app.errors import AppError, TooMany
from app.live import service as live_service
from app.live import worklist as live_worklist
from app.unavailable import DATABASE_OUTAGES, RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)

LOOK_INTERVAL_SECONDS = 1.0
IDLE_LOOK_SECONDS = 5.0  # a worklist without a job queued or running: only new uploads can change it
HEARTBEAT_SECONDS = 15.0  # a comment line, so that proxies and the browser keep an idle stream open
MAX_LIFETIME_SECONDS = 300.0
RETRY_MILLISECONDS = 2000  # how long EventSource waits before it reconnects
RETRY_FINISHED_MILLISECONDS = 30_000  # after the last job finished: a client that stays waits for new jobs slowly
MAX_STREAMS = 100  # per API process: each looks at the database once a second
MAX_STREAMS_PER_USER = 8  # a reader with a few tabs open
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StreamsFull(TooMany):
    """503 with Retry-After: this API process holds as many event streams as it may (for all, or this user)."""

    status_code = 503


class LiveStreams:
    """The open streams of this process: counted per user, each with a stop event that `stop_all` sets."""

    def __init__(self, *, limit: int = MAX_STREAMS, per_user: int = MAX_STREAMS_PER_USER) -> None:
        self.limit = limit
        self.per_user = per_user
        self.stopping = False
        self._lock = threading.Lock()  # the routes check from the threadpool; streams register on the loop
        self._users: Counter[int] = Counter()
        self._stops: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}

    def check_room(self, *, user_id: int) -> None:
        """StreamsFull if one more stream of this user would pass a limit (checked again when it starts)."""
        with self._lock:
            self._refuse_beyond_limits(user_id)

    def _refuse_beyond_limits(self, user_id: int) -> None:
        if self.stopping:
            raise StreamsFull("Lumen is shutting down; try again in a few seconds", retry_after=RETRY_AFTER_SECONDS)
        if sum(self._users.values()) >= self.limit:
            raise StreamsFull(
                f"Lumen holds {self.limit} live streams already; try again later, or reload the page "
                "to see new results",
                retry_after=RETRY_AFTER_SECONDS,
            )
        if self._users[user_id] >= self.per_user:
            raise StreamsFull(
                f"you have {self.per_user} live streams open already (close some tabs)", retry_after=RETRY_AFTER_SECONDS
            )

    @contextmanager
    def held(self, *, user_id: int) -> Iterator[asyncio.Event]:
        """One stream of this user, counted while it runs; yields the event that says it must stop now."""
        stop = asyncio.Event()
        with self._lock:
            self._refuse_beyond_limits(user_id)
            self._users[user_id] += 1
            self._stops[stop] = asyncio.get_running_loop()
        try:
            yield stop
        finally:
            with self._lock:
                self._users[user_id] -= 1
                self._users += Counter()  # drops the users at zero
                del self._stops[stop]

    def open_count(self) -> int:
        with self._lock:
            return sum(self._users.values())

    def stop_all(self) -> None:
        """End every stream at its next await, and refuse new ones: the server is going down."""
        with self._lock:
            self.stopping = True
            stops = list(self._stops.items())
        for stop, loop in stops:
            loop.call_soon_threadsafe(stop.set)

    @asynccontextmanager
    async def stopped_by_signals(self) -> AsyncIterator[None]:
        """While the app runs: SIGTERM and SIGINT stop every stream, then go on to the handler found (uvicorn's,
        which begins the graceful shutdown that waits for open responses). Only the main thread may set
        handlers; a server in another thread (the tests' browser harness) is stopped without a signal."""
        self.stopping = False  # the app may be started again (tests start one app in several clients)
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in _STOP_SIGNALS:
                previous[sig] = signal.signal(sig, partial(self._on_signal, signal.getsignal(sig)))
        try:
            yield
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(
        self, handler: Callable[[int, FrameType | None], Any] | int | None, sig: int, frame: FrameType | None
    ) -> None:
        self.stop_all()
        if callable(handler):
            handler(sig, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)


def _event(name: str, data: object, *, event_id: str | None = None) -> str:
    lines = [f"event: {name}"] + ([f"id: {event_id}"] if event_id else [])
    return "\n".join([*lines, f"data: {json.dumps(data, separators=(',', ':'))}", "", ""])


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def _look(*, study_id: int, auth_session_id: int, known: live_service.Digest | None) -> live_service.Look:
    # A unit of work of its own per look, so that no connection is held between looks.
    with session_scope(writes=False) as session:
        return live_service.look(session, study_id=study_id, auth_session_id=auth_session_id, known=known)


def _events_of(look: live_service.Look) -> list[str]:
    # Results before state: a client may stop listening at the state that says the last job is done.
    event_id = look.digest.event_id
    events = []
    if look.instances is not None:
        instances = [item.model_dump(mode="json") for item in look.instances]
        events.append(_event("results", {"instances": instances}, event_id=event_id))
    if look.state is not None:
        events.append(_event("state", look.state.model_dump(mode="json"), event_id=event_id))
    return events


async def study_events(
    streams: LiveStreams, *, study_id: int, user_id: int, auth_session_id: int, last_event_id: str | None
) -> AsyncIterator[str]:
    """The event stream of one study for one caller (docs/api.md, "Live updates")."""
    loop = asyncio.get_running_loop()
    try:
        with streams.held(user_id=user_id) as stop:
            yield f"retry: {RETRY_MILLISECONDS}\n\n"
            started = last_sent = loop.time()
            known = live_service.Digest.parse(last_event_id)
            while not stop.is_set():
                look = await to_thread.run_sync(
                    partial(_look, study_id=study_id, auth_session_id=auth_session_id, known=known)
                )
                known = look.digest
                for event in _events_of(look):
                    yield event
                    last_sent = loop.time()
                if not look.digest.active:
                    yield f"retry: {RETRY_FINISHED_MILLISECONDS}\n" + _event(
                        "end", {"reason": "no job is queued or running"}
                    )
                    return
                if loop.time() - last_sent >= HEARTBEAT_SECONDS:
                    yield ": keep-alive\n\n"
                    last_sent = loop.time()
                if loop.time() - started >= MAX_LIFETIME_SECONDS or await _stopped(stop, LOOK_INTERVAL_SECONDS):
                    return
    except AppError as refusal:  # signed out, blinded, the study deleted, or too many streams since the check
        yield _event("refused", {"status": refusal.status_code, "detail": str(refusal)})
    except DATABASE_OUTAGES as outage:
        # The stream ends; EventSource reconnects after `retry:` and is answered 503 while the outage lasts.
        logger.warning("live stream of study %s ended: database unavailable: %s", study_id, outage)


def _worklist_look(*, auth_session_id: int, known: str | None) -> live_worklist.WorklistLook:
    with session_scope(writes=False) as session:
        return live_worklist.look(session, auth_session_id=auth_session_id, known=known)


async def worklist_events(
    streams: LiveStreams, *, user_id: int, auth_session_id: int, last_event_id: str | None
) -> AsyncIterator[str]:
    """The event stream of one caller's worklist rows (docs/api.md, "Live updates"): all of them at first (none
    when `last_event_id` is the digest now), then the rows that changed, whenever any did."""
    loop = asyncio.get_running_loop()
    try:
        with streams.held(user_id=user_id) as stop:
            yield f"retry: {RETRY_MILLISECONDS}\n\n"
            started = last_sent = loop.time()
            known: str | None = None
            sent: dict[int, dict] = {}
            while not stop.is_set():
                look = await to_thread.run_sync(partial(_worklist_look, auth_session_id=auth_session_id, known=known))
                if look.rows is not None:
                    rows = [row.model_dump(mode="json") for row in look.rows]
                    changed = live_worklist.changed_rows(rows, sent=sent)
                    ids = [row["id"] for row in rows]
                    client_has_it = known is None and look.digest.value == last_event_id
                    if (changed or ids != list(sent)) and not client_has_it:
                        data = {"ids": ids, "studies": changed, "active": look.digest.active}
                        yield _event("rows", data, event_id=look.digest.value)
                        last_sent = loop.time()
                    sent = {row["id"]: row for row in rows}
                known = look.digest.value
                if loop.time() - last_sent >= HEARTBEAT_SECONDS:
                    yield ": keep-alive\n\n"
                    last_sent = loop.time()
                interval = LOOK_INTERVAL_SECONDS if look.digest.active else IDLE_LOOK_SECONDS
                if loop.time() - started >= MAX_LIFETIME_SECONDS or await _stopped(stop, interval):
                    return
    except AppError as refusal:  # signed out, or too many streams since the check
        yield _event("refused", {"status": refusal.status_code, "detail": str(refusal)})
    except DATABASE_OUTAGES as outage:
        logger.warning("live stream of a worklist ended: database unavailable: %s", outage)
