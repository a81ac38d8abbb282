"""Sign-in and sign-out pages: a cookie session for browsers, with CSRF on the login form itself."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.auth import service as auth_service
from app.auth.dependencies import CSRF_FIELD, SESSION_COOKIE, PageCaller
from app.config import get_settings
from app.db import DbSession

logger = logging.getLogger(__name__)

router = APIRouter(tags=["pages"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")

# Double-submit cookie: the login form has no session yet, so its CSRF value lives in a short cookie.
LOGIN_CSRF_COOKIE = "lumen_login_csrf"
_LOGIN_CSRF_SECONDS = 15 * 60


def local_path(target: str | None) -> str:
    """`target` if it is a path on this site, else "/": never redirect a signed-in user elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(char) < 32 for char in target):
        return "/"
    return target


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _login_form(
    request: Request,
    *,
    next_path: str,
    error: str = "",
    email: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    token = secrets.token_urlsafe(24)
    context = {"csrf_token": token, "next": next_path, "error": error, "email": email, "caller": None}
    response = templates.TemplateResponse(request, "auth/login.html", context, status_code=status_code,
                                          headers=headers)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=_LOGIN_CSRF_SECONDS,
        path="/login",
        httponly=True,
        samesite="lax",
        secure=get_settings().secure_cookies,
    )
    return response


@router.get("/login", include_in_schema=False)
def login_page(request: Request, session: DbSession, next: str = "/") -> Response:
    """The sign-in form; a visitor already signed in goes straight on."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and auth_service.resolve_token(session, token=cookie, kind="cookie"):
        return RedirectResponse(local_path(next), status_code=status.HTTP_303_SEE_OTHER)
    return _login_form(request, next_path=local_path(next))


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    session: DbSession,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD)] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the form's CSRF value and the credentials, then open a cookie session."""
    next_path = local_path(next)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not csrf_token:
        error = "The sign-in form expired. Please try again."
        return _login_form(request, next_path=next_path, error=error, email=email, status_code=403)
    if not secrets.compare_digest(expected, csrf_token):
        error = "The sign-in form was not valid. Please try again."
        return _login_form(request, next_path=next_path, error=error, email=email, status_code=400)
    settings = get_settings()
    try:
        token, _row = auth_service.sign_in(
            session, email=email, password=password, kind="cookie", hours=settings.session_hours,
            ip=_client_ip(request),
        )
    except auth_service.LoginThrottled as exc:
        error = f"Too many failed sign-ins. Try again in {exc.retry_after} seconds."
        return _login_form(request, next_path=next_path, error=error, email=email,
                           status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                           headers={"Retry-After": str(exc.retry_after)})
    except auth_service.AuthError as exc:
        # The form again, returned (not raised) so that the audit row of the failure is committed.
        return _login_form(
            request, next_path=next_path, error=str(exc).capitalize() + ".", email=email, status_code=401
        )
    response = RedirectResponse(next_path, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_hours * 3600,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request, caller: PageCaller, session: DbSession) -> Response:
    """End the browser session (the CSRF field was checked by the caller dependency)."""
    auth_service.sign_out(session, auth_session=caller.auth_session, ip=_client_ip(request))
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
