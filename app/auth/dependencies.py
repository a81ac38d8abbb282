"""Who is calling: bearer token or session cookie (with CSRF on unsafe methods), and role checks."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from app.auth import service as auth_service
from app.db import DbSession
from app.tables import AuthSession, Role, User

SESSION_COOKIE = "lumen_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class LoginRequired(Exception):
    """Raised for pages: the error handler redirects to the login page instead of a JSON 401."""


@dataclass(frozen=True)
class Caller:
    user: User
    auth_session: AuthSession
    via_cookie: bool


@dataclass(frozen=True)
class SignedInUser:
    id: int
    email: str
    full_name: str
    role: Role


@dataclass(frozen=True)
class SignedIn:
    """Who is signed in, as the top bar of a page shows them, copied from the rows: an error page is rendered
    after its request's unit of work was rolled back, which expires the rows (app/http_errors.py)."""

    user: SignedInUser
    csrf_token: str

    @classmethod
    def of(cls, caller: Caller) -> SignedIn:
        user = caller.user
        return cls(SignedInUser(user.id, user.email, user.full_name, user.role), caller.auth_session.csrf_token)


async def _check_csrf(request: Request, expected: str) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = (await request.form()).get(CSRF_FIELD)  # type: ignore[assignment]
    if not sent or not secrets.compare_digest(str(sent), expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")


async def get_caller(request: Request, session: DbSession) -> Caller:
    """The authenticated caller, or 401. Cookie callers must send the CSRF token on unsafe methods.

    The token lookup runs in the threadpool: a database call on the event loop would stall every request
    (and, with the pool exhausted, the whole server) while it waits.
    """
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        row = await run_in_threadpool(auth_service.resolve_token, session, token=header[7:].strip(), kind="bearer")
        if row is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "invalid or expired token", {"WWW-Authenticate": "Bearer"}
            )
        return Caller(user=row.user, auth_session=row, via_cookie=False)
    cookie = request.cookies.get(SESSION_COOKIE)
    row = await run_in_threadpool(auth_service.resolve_token, session, token=cookie, kind="cookie") if cookie else None
    if row is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "sign in or send a bearer token", {"WWW-Authenticate": "Bearer"}
        )
    if request.method not in _SAFE_METHODS:
        await _check_csrf(request, row.csrf_token)
    return Caller(user=row.user, auth_session=row, via_cookie=True)


CurrentCaller = Annotated[Caller, Depends(get_caller)]


async def get_current_user(caller: CurrentCaller) -> User:
    return caller.user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: Role) -> Callable[[User], Awaitable[User]]:
    """A dependency that lets only these roles through (403 otherwise)."""

    async def _dependency(user: CurrentUser) -> User:
        if user.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"the {user.role} role may not do this")
        return user

    return _dependency


async def get_page_caller(request: Request, session: DbSession) -> Caller:
    """Like get_caller, for HTML pages: an anonymous visitor is sent to the login page. Who is signed in is kept
    on the request for the error pages (app/http_errors.py)."""
    try:
        caller = await get_caller(request, session)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            raise LoginRequired from exc
        raise
    request.state.signed_in = SignedIn.of(caller)
    return caller


PageCaller = Annotated[Caller, Depends(get_page_caller)]

# Who may do what. Readers read; coordinators and admins also bring studies in.
CanRead = Annotated[User, Depends(require_roles(Role.admin, Role.coordinator, Role.reader))]
CanUpload = Annotated[User, Depends(require_roles(Role.admin, Role.coordinator))]
IsAdmin = Annotated[User, Depends(require_roles(Role.admin))]
