"""Onboarding API: upload a model with its card's answers, follow the checks, confirm the target layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile, status
from fastapi.responses import FileResponse
from pydantic import ValidationError

from app.audit import service as audit
from app.audit.dependencies import ClientIp
from app.auth.dependencies import CanUpload
from app.bounds import DbId
from app.db import DbSession
from app.errors import Invalid, NotFound
from app.onboarding import service
from app.onboarding.schemas import CardAnswers, Confirmation, OnboardingOut

router = APIRouter(prefix="/onboardings", tags=["models"])

_START_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"description": "this name and version has predictions, is installed from a folder, or is being onboarded"},
    422: {"description": "answers that do not fit, a format Lumen cannot explain (ONNX, Keras), an empty file"},
}


def answers_from_json(text: str) -> CardAnswers:
    """The answers field (JSON), or Invalid naming each field at fault."""
    try:
        return CardAnswers.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise Invalid(f"answers: not JSON ({exc})") from None
    except ValidationError as exc:
        raise Invalid("answers: " + reasons(exc)) from None


def reasons(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answers'}: {e['msg']}" for e in exc.errors())


@router.post("", status_code=status.HTTP_201_CREATED, response_model=OnboardingOut, responses=_START_ERRORS)
def start_onboarding(
    session: DbSession,
    user: CanUpload,
    ip: ClientIp,
    model: Annotated[UploadFile, File(description="TorchScript file, state dict of a timm network, or a zipped "
                                                  "MONAI bundle")],
    answers: Annotated[str, Form(description="the card's answers as JSON (CardAnswers)")],
    validation: Annotated[UploadFile | None, File(description=".zip of labels.csv (image,label) and images")] = None,
    test: Annotated[UploadFile | None, File(description=".zip of labels.csv (image,label) and images")] = None,
) -> OnboardingOut:
    """Store the model and the labelled sets, then a worker reads the file and proposes the target layer."""
    row = service.start(
        session, answers=answers_from_json(answers), model=_file(model),
        validation=_file(validation) if validation else None, test=_file(test) if test else None, user_id=user.id,
    )
    audit.record(session, action="model.onboard", user_id=user.id, object_type="onboarding", object_id=row.id, ip=ip,
                 detail={"name": row.name, "version": row.version, "file": row.filename})
    return OnboardingOut.model_validate(row)


@router.get("", response_model=list[OnboardingOut])
def list_onboardings(session: DbSession, _user: CanUpload) -> list[OnboardingOut]:
    """The latest onboardings, newest first."""
    return [OnboardingOut.model_validate(row) for row in service.recent(session)]


@router.get("/{onboarding_id}", response_model=OnboardingOut, responses={404: {"description": "no such onboarding"}})
def get_onboarding(onboarding_id: DbId, session: DbSession, _user: CanUpload) -> OnboardingOut:
    """Where it stands: state, progress, what the file told, the checks' report."""
    return OnboardingOut.model_validate(service.get(session, onboarding_id=onboarding_id))


@router.post("/{onboarding_id}/confirm", response_model=OnboardingOut,
             responses={404: {"description": "no such onboarding"}, 409: {"description": "not waiting for this"},
                        422: {"description": "not a candidate layer"}})
def confirm_onboarding(
    onboarding_id: DbId, confirmation: Confirmation, session: DbSession, user: CanUpload, ip: ClientIp
) -> OnboardingOut:
    """Confirm the target layer seen on the preview; the checks run."""
    row = service.confirm(session, onboarding_id=onboarding_id, confirmation=confirmation)
    audit.record(session, action="model.onboard.confirm", user_id=user.id, object_type="onboarding", object_id=row.id,
                 ip=ip, detail={"target_layer": confirmation.target_layer})
    return OnboardingOut.model_validate(row)


@router.get("/{onboarding_id}/preview.png", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, 404: {"description": "no preview"}})
def onboarding_preview(onboarding_id: DbId, session: DbSession, _user: CanUpload) -> FileResponse:
    """The Grad-CAM of the proposed target layer on a sample image of the model's domain."""
    row = service.get(session, onboarding_id=onboarding_id)
    path = Path(row.folder) / "preview.png"
    if not path.is_file():
        raise NotFound(f"onboarding {row.id} has no preview ({row.proposal.get('layer_reason') or row.state.value})")
    return FileResponse(path, media_type="image/png")


def _file(upload: UploadFile) -> service.UploadedFile:
    return service.UploadedFile(filename=upload.filename or "model", stream=upload.file)
