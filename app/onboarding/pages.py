"""Onboarding pages: the form that brings a model in, and the onboarding's own page (progress, the proposed
target layer on its preview, the checks' report). Admins and coordinators."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile, status
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from app.admin.dependencies import StaffPageCaller
from app.audit import service as audit
from app.auth.dependencies import Caller
from app.bounds import DbId
from app.db import DbSession
from app.errors import AppError
from app.onboarding import service
from app.onboarding.router import reasons
from app.onboarding.schemas import CardAnswers, Confirmation
from app.tables import OnboardingState

templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
router = APIRouter(prefix="/admin", include_in_schema=False)


OnboarderPage = StaffPageCaller
_FIELDS = ("name", "version", "task", "labels", "modalities", "body_parts", "body_part", "photometric", "colour",
           "size", "mean", "std", "crop", "windowing", "invert_monochrome1", "architecture", "uncertainty",
           "uncertainty_samples", "training_data", "licence", "intended_use")


def _context(caller: Caller, **values: Any) -> dict[str, Any]:
    return {"caller": caller, "csrf_token": caller.auth_session.csrf_token, "section": "models", **values}


@router.get("/models/add")
def add_model_page(request: Request, caller: OnboarderPage, session: DbSession) -> Response:
    """The form: the model file, the card's answers, the labelled sets."""
    context = _context(caller, form={}, error="", onboardings=service.recent(session, limit=10))
    return templates.TemplateResponse(request, "onboarding/add.html", context)


@router.post("/models/add")
async def add_model(request: Request, caller: OnboarderPage, session: DbSession,
                    model: Annotated[UploadFile | None, File()] = None,
                    validation: Annotated[UploadFile | None, File()] = None,
                    test: Annotated[UploadFile | None, File()] = None) -> Response:
    """Start the onboarding from the form, or show the form again with what was wrong (nothing is stored)."""
    form_data = await request.form()
    form = {key: str(form_data.get(key, "")) for key in _FIELDS}
    form["invert_monochrome1"] = "on" if form_data.get("invert_monochrome1") else ""
    form["crop"] = "fundus" if form_data.get("crop") else ""
    try:
        if model is None or not model.filename:
            raise _FormError("Model file: choose the model file (TorchScript, a timm state dict or a zipped MONAI "
                             "bundle).")
        answers = CardAnswers.model_validate(_answers(form))
        row = service.start(
            session, answers=answers, model=_file(model), validation=_upload(validation), test=_upload(test),
            user_id=caller.user.id,
        )
    except ValidationError as exc:
        session.rollback()
        return _form_again(request, caller, session, form, reasons(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)
    except (_FormError, AppError) as exc:
        session.rollback()  # nothing of a refused onboarding stays
        code = getattr(exc, "status_code", status.HTTP_422_UNPROCESSABLE_CONTENT)
        return _form_again(request, caller, session, form, str(exc), code)
    audit.record(session, action="model.onboard", user_id=caller.user.id, object_type="onboarding", object_id=row.id,
                 ip=request.client.host if request.client else "",
                 detail={"name": row.name, "version": row.version, "file": row.filename})
    return RedirectResponse(f"/admin/onboardings/{row.id}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/onboardings/{onboarding_id}")
def onboarding_page(request: Request, onboarding_id: DbId, caller: OnboarderPage, session: DbSession) -> Response:
    """Where the onboarding stands; the preview and the confirmation once proposed; the report once checked."""
    row = service.get(session, onboarding_id=onboarding_id)
    running = row.state in (OnboardingState.inspecting, OnboardingState.checking)
    return templates.TemplateResponse(request, "onboarding/onboarding.html",
                                      _context(caller, row=row, running=running))


@router.post("/onboardings/{onboarding_id}/confirm")
def confirm_page(request: Request, onboarding_id: DbId, caller: OnboarderPage, session: DbSession,
                 target_layer: Annotated[str, Form(max_length=300)] = "") -> Response:
    """The coordinator confirmed the target layer: the checks are sent."""
    service.confirm(session, onboarding_id=onboarding_id, confirmation=Confirmation(target_layer=target_layer))
    audit.record(session, action="model.onboard.confirm", user_id=caller.user.id, object_type="onboarding",
                 object_id=onboarding_id, ip=request.client.host if request.client else "",
                 detail={"target_layer": target_layer})
    return RedirectResponse(f"/admin/onboardings/{onboarding_id}", status_code=status.HTTP_303_SEE_OTHER)


class _FormError(Exception):
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT


def _answers(form: dict[str, str]) -> dict[str, Any]:
    """The form's text fields as the answers' types: lists split on commas or spaces, numbers parsed."""
    def words(text: str, upper: bool = False) -> list[str]:
        items = [item.strip() for item in re.split(r"[,\n]" if not upper else r"[,\s]+", text) if item.strip()]
        return [item.upper() for item in items] if upper else items

    def numbers(text: str, kind: type) -> list[Any]:
        try:
            return [kind(item) for item in re.split(r"[,\sx×]+", text.strip()) if item]
        except ValueError:
            raise _FormError(f"Not a list of numbers: {text!r}.") from None

    answers: dict[str, Any] = {key: form[key] for key in ("name", "version", "task", "body_part", "photometric",
                                                          "colour", "windowing", "architecture", "uncertainty",
                                                          "training_data", "licence", "intended_use") if form[key]}
    answers["labels"] = words(form["labels"])
    answers["modalities"] = words(form["modalities"], upper=True)
    answers["body_parts"] = words(form["body_parts"], upper=True)
    answers["size"] = numbers(form["size"], int)
    answers["mean"] = numbers(form["mean"], float)
    answers["std"] = numbers(form["std"], float)
    answers["crop"] = form["crop"] or None
    answers["invert_monochrome1"] = bool(form["invert_monochrome1"])
    if form["uncertainty_samples"]:
        answers["uncertainty_samples"] = numbers(form["uncertainty_samples"], int)[0]
    return answers


def _form_again(request: Request, caller: Caller, session: DbSession, form: dict[str, str], error: str,
                code: int) -> Response:
    context = _context(caller, form=form, error=error, onboardings=service.recent(session, limit=10))
    return templates.TemplateResponse(request, "onboarding/add.html", context, status_code=code)


def _file(upload: UploadFile) -> service.UploadedFile:
    return service.UploadedFile(filename=upload.filename or "model", stream=upload.file)


def _upload(upload: UploadFile | None) -> service.UploadedFile | None:
    return _file(upload) if upload is not None and upload.filename else None
