"""The answers a model's card needs from whoever brings it, and the onboarding as the pages and API show it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.tables import OnboardingState

ModelName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,62}$", description="lower case, digits, . _ -")]
Version = Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,31}$")]
Label = Annotated[str, Field(min_length=1, max_length=80)]
Modality = Annotated[str, Field(pattern=r"^[A-Z]{2,4}$", description="a DICOM modality: OP, CR, DX...")]
BodyPart = Annotated[str, Field(pattern=r"^[A-Z0-9_ ]{1,16}$", description="a DICOM body part: EYE, CHEST...")]
Text = Annotated[str, Field(max_length=2000)]


class CardAnswers(BaseModel):
    """What the file cannot tell about itself. Left empty, `labels`, `size` and `channels` come from a MONAI
    bundle's metadata; `target_layer` empty: the worker proposes the last spatial layer, confirmed on a preview."""

    model_config = ConfigDict(extra="forbid")

    name: ModelName
    version: Version
    task: Literal["classification", "multilabel"] = "classification"
    labels: list[Label] = Field(default_factory=list, max_length=100)
    modalities: list[Modality] = Field(min_length=1, max_length=10)
    body_parts: list[BodyPart] = Field(default_factory=list, max_length=10)
    body_part: Annotated[str, Field(min_length=1, max_length=100)]
    photometric: Text = ""
    colour: Literal["rgb", "grayscale"] = "rgb"
    size: list[Annotated[int, Field(ge=2, le=4096)]] = Field(default_factory=list, max_length=3)
    mean: list[float] = Field(default_factory=list, max_length=3)
    std: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list, max_length=3)
    crop: Literal["fundus"] | None = None
    windowing: Literal["minmax", "percentile", "dicom"] = "minmax"
    invert_monochrome1: bool = True
    # Only for a plain state dict: which network its weights are for ("timm:resnet18").
    architecture: Annotated[str, Field(max_length=100)] = ""
    target_layer: Annotated[str, Field(max_length=300)] = ""
    uncertainty: Literal["none", "mc_dropout", "tta"] = "none"
    uncertainty_samples: Annotated[int, Field(ge=1, le=100)] = 1
    training_data: Text = Field(min_length=1)
    licence: Text = Field(min_length=1)
    intended_use: Text = "research, not for clinical use"

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str]) -> list[str]:
        if labels and (len(labels) < 2 or len(set(labels)) != len(labels)):
            raise ValueError("must name at least 2 distinct classes (or be left empty for a bundle that names them)")
        return labels

    @field_validator("size")
    @classmethod
    def _size(cls, size: list[int]) -> list[int]:
        if size and len(size) not in (2, 3):
            raise ValueError("must be [H, W] (or [D, H, W]), or empty for a bundle that says it")
        return size

    @model_validator(mode="after")
    def _per_channel(self) -> CardAnswers:
        channels = 3 if self.colour == "rgb" else 1
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values and len(values) != channels:
                raise ValueError(f"{name} must have {channels} values for {self.colour} input, got {len(values)}")
        if self.uncertainty == "mc_dropout" and self.uncertainty_samples < 2:
            raise ValueError("uncertainty_samples must be >= 2 for mc_dropout")
        if self.architecture and not self.architecture.startswith("timm:"):
            raise ValueError("architecture must be 'timm:<model name>' (a timm network), or empty")
        return self


class OnboardingOut(BaseModel):
    """One onboarding as the API shows it: where it stands, what the worker found and what the checks said."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    version: str
    state: OnboardingState
    progress: int
    stage: str
    filename: str
    answers: dict[str, Any]
    proposal: dict[str, Any]
    report: dict[str, Any]
    error: str
    model_id: int | None
    created_at: datetime
    finished_at: datetime | None


class Confirmation(BaseModel):
    """The coordinator's confirmation after the preview: the target layer (one of the proposal's candidates, or
    empty for none: the layer methods are then not offered)."""

    model_config = ConfigDict(extra="forbid")

    target_layer: Annotated[str, Field(max_length=300)] = ""
