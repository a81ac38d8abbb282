"""Admin pages: installed models and their cards, user accounts and roles, the audit log. Admins only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, status
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from app.admin import service as admin_service
from app.admin.dependencies import AdminPageCaller, StaffPageCaller
from app.admin.schemas import MIN_PASSWORD, NewUser, UserRow
from app.auth.dependencies import Caller
from app.bounds import MAX_INT32, DbId, FreeText
from app.db import DbSession
from app.errors import Conflict, NotFound, Refused
from app.tables import Role

templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")


def _card_value(value: Any) -> str:
    """A card value as text: floats to 4 significant digits, lists joined, missing as a dash."""
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_card_value(item) for item in value)
    return str(value)


def _seconds(value: float | None) -> str:
    """Seconds as a person reads them: 0.84 s, 12.3 s, 2 min 5 s; a dash when unknown."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {int(value % 60)} s"


templates.env.filters["card_value"] = _card_value
templates.env.filters["seconds"] = _seconds
templates.env.globals["flat_items"] = admin_service.flat_items


# Anyone but an admin gets the admins-only page (app.admin.dependencies.NotAdmin, app/http_errors.py).
router = APIRouter(prefix="/admin", tags=["pages"])

_NOTICES = {
    "created": "Account {email} created.",
    "role": "{email} is now {role}.",
    "deactivated": "{email} is deactivated: it can no longer sign in, and its tokens are refused.",
    "reactivated": "{email} can sign in again.",
}


def _context(caller: Caller, **values: Any) -> dict[str, Any]:
    return {"caller": caller, "csrf_token": caller.auth_session.csrf_token, **values}


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


@router.get("", include_in_schema=False)
def admin_home(_caller: AdminPageCaller) -> Response:
    """The admin section opens on the models."""
    return RedirectResponse("/admin/models", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/models", include_in_schema=False)
def models_page(request: Request, caller: StaffPageCaller, session: DbSession) -> Response:
    """Every registered model with its calibration, referral threshold, weights and test metrics."""
    context = _context(caller, section="models", models=admin_service.list_models(session))
    return templates.TemplateResponse(request, "admin/models.html", context)


@router.get("/models/{model_id}", include_in_schema=False)
def model_page(request: Request, model_id: DbId, caller: StaffPageCaller, session: DbSession) -> Response:
    """One model's whole card in readable form."""
    model = admin_service.get_model(session, model_id=model_id)
    return templates.TemplateResponse(request, "admin/model.html", _context(caller, section="models", model=model))


def _users_page(
    request: Request,
    caller: Caller,
    session: DbSession,
    *,
    error: str = "",
    form: dict[str, str] | None = None,
    done: str = "",
    done_id: int | None = None,
    status_code: int = status.HTTP_200_OK,
) -> Response:
    users = admin_service.list_users(session)
    context = _context(
        caller, section="users", users=users, roles=list(Role), error=error, notice=_notice(users, done, done_id),
        form=form or {"role": Role.reader.value}, min_password=MIN_PASSWORD,
    )
    return templates.TemplateResponse(request, "admin/users.html", context, status_code)


def _notice(users: list[UserRow], done: str, done_id: int | None) -> str:
    user = next((row for row in users if row.id == done_id), None)
    if user is None or done not in _NOTICES:
        return ""
    return _NOTICES[done].format(email=user.email, role=user.role.value)


@router.get("/users", include_in_schema=False)
def users_page(
    request: Request, caller: AdminPageCaller, session: DbSession, done: str = "", user: DbId | None = None
) -> Response:
    """Accounts with their role and state, a form to create one, and role / deactivate controls."""
    return _users_page(request, caller, session, done=done, done_id=user)


def _done(what: str, user_id: int) -> Response:
    # Post/redirect/get: a reload does not send the form again.
    return RedirectResponse(f"/admin/users?done={what}&user={user_id}", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/users", include_in_schema=False)
def create_user(
    request: Request,
    caller: AdminPageCaller,
    session: DbSession,
    email: Annotated[str, Form()] = "",
    full_name: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    specialty: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    """Create an account from the form; the page says what was wrong (422, 409) and nothing is created."""
    form = {"email": email, "full_name": full_name, "role": role, "specialty": specialty}
    try:
        new = NewUser.model_validate({**form, "password": password})
        user = admin_service.create_user(session, actor_id=caller.user.id, new=new, ip=_client_ip(request))
    except ValidationError as exc:
        return _users_page(request, caller, session, error=_reasons(exc), form=form,
                           status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    except Conflict as exc:  # a taken email
        return _users_page(request, caller, session, error=f"{str(exc).capitalize()}.", form=form,
                           status_code=status.HTTP_409_CONFLICT)
    return _done("created", user.id)


def _reasons(exc: ValidationError) -> str:
    """One sentence per invalid field, e.g. "Password: the password must have at least 12 characters"."""
    reasons = []
    for error in exc.errors():
        field = str(error["loc"][0]).replace("_", " ").capitalize() if error["loc"] else "Form"
        message = str(error["msg"]).removeprefix("Value error, ")
        reasons.append(f"{field}: {message}.")
    return " ".join(reasons)


def _no_user(request: Request, caller: Caller, session: DbSession, user_id: int) -> Response:
    return _users_page(request, caller, session, error=f"There is no user {user_id}.",
                       status_code=status.HTTP_404_NOT_FOUND)


@router.post("/users/{user_id}/role", include_in_schema=False)
def change_role(
    request: Request, user_id: DbId, caller: AdminPageCaller, session: DbSession, role: Annotated[str, Form()] = ""
) -> Response:
    """Give an account another role (audited); not one's own."""
    if role not in Role.__members__:
        error = f"Unknown role {role!r}: choose one of {', '.join(Role)}."
        return _users_page(request, caller, session, error=error, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    try:
        admin_service.change_role(session, actor_id=caller.user.id, user_id=user_id, role=Role(role),
                                  ip=_client_ip(request))
    except Refused as exc:
        return _users_page(request, caller, session, error=str(exc), status_code=status.HTTP_400_BAD_REQUEST)
    except NotFound:
        return _no_user(request, caller, session, user_id)
    return _done("role", user_id)


@router.post("/users/{user_id}/active", include_in_schema=False)
def set_active(
    request: Request, user_id: DbId, caller: AdminPageCaller, session: DbSession, active: Annotated[bool, Form()]
) -> Response:
    """Deactivate or reactivate an account (audited); deactivating oneself is refused."""
    try:
        admin_service.set_active(session, actor_id=caller.user.id, user_id=user_id, active=active,
                                 ip=_client_ip(request))
    except Refused as exc:
        return _users_page(request, caller, session, error=str(exc), status_code=status.HTTP_400_BAD_REQUEST)
    except NotFound:
        return _no_user(request, caller, session, user_id)
    return _done("reactivated" if active else "deactivated", user_id)


@router.get("/audit", include_in_schema=False)
def audit_page(
    request: Request,
    caller: AdminPageCaller,
    session: DbSession,
    action: Annotated[FreeText, Query(max_length=100)] = "",
    email: Annotated[FreeText, Query(max_length=320)] = "",
    page: Annotated[int, Query(ge=1, le=MAX_INT32)] = 1,
) -> Response:
    """The audit log, newest first, 50 a page, filtered by action and user email."""
    log = admin_service.audit_page(session, action=action, email=email, page=page)
    return templates.TemplateResponse(request, "admin/audit.html", _context(caller, section="audit", log=log))
