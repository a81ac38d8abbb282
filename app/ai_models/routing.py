"""Which model may run on which image: a model's card names its domain (modalities, and DICOM body parts where it
matters); an image is in it when its modality is one of them and its body part is one of them or unknown.

Routing decides on what the image says of itself (a DICOM header, or what the upload said of a PNG/JPEG); the
model's input-domain gate (models/ood.py, in the worker) then refuses an image that passed routing but does not
look like the model's training data. A model not served automatically still runs when it is asked for by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.tables import AiModel, Instance


def body_parts(model: AiModel) -> list[str]:
    """The DICOM body parts of the model's domain (e.g. CHEST, EYE); empty where the card does not restrict it."""
    domain = model.card.get("domain") or {}
    return [str(part).upper() for part in domain.get("body_parts") or []]


def applies(model: AiModel, *, modality: str, body_part: str) -> bool:
    """Whether an image of this modality and body part ("" when its header does not say) is in the model's domain."""
    parts = body_parts(model)
    return modality in model.modalities and (not parts or not body_part or body_part.upper() in parts)


def _active_models(session: Session) -> Sequence[AiModel]:
    return session.scalars(
        select(AiModel).where(AiModel.is_active.is_(True)).order_by(AiModel.created_at.desc(), AiModel.id.desc())
    ).all()


def automatic_model(session: Session, *, modality: str, body_part: str = "") -> AiModel | None:
    """The newest active model served automatically on images of this modality and body part, or None."""
    return next(
        (
            model for model in _active_models(session)
            if model.card.get("serve_automatically", True) and applies(model, modality=modality, body_part=body_part)
        ),
        None,
    )


def _domain(model: AiModel) -> str:
    parts = body_parts(model)
    return "/".join(model.modalities) + (f" {'/'.join(parts).lower()}" if parts else "")


def _image(instance: Instance) -> str:
    body_part = instance.series.body_part
    return f"{instance.modality or 'unknown modality'} {body_part.lower() if body_part else '(body part not stated)'}"


def model_for_request(session: Session, *, instance: Instance, model_name: str | None) -> AiModel:
    """The model an explicit request runs on this image: the one named (served automatically or not), else the
    automatic one, else the newest installed model whose domain takes the image. Invalid, naming the image's
    modality and body part and the installed models for it, when none does."""
    models = _active_models(session)
    body_part = instance.series.body_part
    if model_name is not None:
        named = next((model for model in models if model.name == model_name), None)
        if named is None:
            installed = ", ".join(sorted({model.name for model in models})) or "none"
            raise Invalid(f"no installed model {model_name!r}; installed: {installed}")
        if not applies(named, modality=instance.modality, body_part=body_part):
            raise Invalid(f"{named.name} is for {_domain(named)} images; this image is {_image(instance)}")
        return named
    fitting = [model for model in models if applies(model, modality=instance.modality, body_part=body_part)]
    automatic = [model for model in fitting if model.card.get("serve_automatically", True)]
    if not fitting:
        raise Invalid(f"no installed model takes {_image(instance)} images")
    return (automatic or fitting)[0]
