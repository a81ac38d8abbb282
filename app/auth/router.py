"""Auth JSON API: bearer tokens for scripts and PACS bridges, sign-out, who am I."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm

from app.auth import service as auth_service
from app.auth.dependencies import SESSION_COOKIE, CurrentCaller, CurrentUser
from app.auth.schemas import TokenOut, UserOut
from app.config import get_settings
from app.db import DbSession

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/auth", tags=["auth"])


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


@router.post(
    "/token",
    response_model=TokenOut,
    responses={
        401: {"description": "wrong credentials"},
        429: {"description": "too many failed sign-ins of this account or from this address; see Retry-After"},
    },
)
def create_token(
    request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], session: DbSession
) -> TokenOut | JSONResponse:
    """Exchange an email and password for a bearer token."""
    try:
        token, row = auth_service.sign_in(
            session, email=form.username, password=form.password, kind="bearer",
            hours=get_settings().token_hours, ip=client_ip(request),
        )
    except auth_service.LoginThrottled as exc:
        return JSONResponse(
            {"detail": str(exc)}, status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except auth_service.AuthError as exc:
        # Returned, not raised: raising would roll back the session and lose the audit row of the failure.
        return JSONResponse(
            {"detail": str(exc)}, status_code=status.HTTP_401_UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"}
        )
    return TokenOut(access_token=token, expires_at=row.expires_at)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, caller: CurrentCaller, session: DbSession) -> Response:
    """Revoke the token or browser session that made this call."""
    auth_service.sign_out(session, auth_session=caller.auth_session, ip=client_ip(request))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if caller.via_cookie:
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    """The signed-in user."""
    return UserOut.model_validate(user)
