"""Load a model from its card: verify the weights' sha256, build the network (or load TorchScript), load the
state dict, and check the output shape against the card's labels with a dummy forward.

Cards themselves live in `models.card` (torch-free, for the web app); networks in `models.networks`;
explainers by name in `models.explain.registry`.
"""

from __future__ import annotations

import torch
from torch import nn

from models.card import CardError, ModelCard, load_card
from models.networks import build_network
from models.networks.external import EXTERNAL, build_external


def build_from_card(card: ModelCard) -> nn.Module:
    """A freshly initialised network as the card describes it (no weights loaded): a Lumen network by name,
    or one of another library (`models.networks.external`: a MONAI bundle in the model folder, timm)."""
    if card.format != "state_dict":
        raise CardError(f"model {card.name!r} ({card.folder}): a {card.format} model has no architecture to build")
    name, params = card.architecture.name, card.architecture.params
    try:
        if name in EXTERNAL:
            return build_external(
                name, params, folder=card.folder, num_classes=card.num_classes, in_channels=card.input.channels
            )
        return build_network(name, **params)
    except ValueError as exc:
        raise CardError(f"model {card.name!r} ({card.folder}): {exc}") from exc


def load_model(card: ModelCard, device: str | torch.device = "cpu", *, check_output: bool = True) -> nn.Module:
    """The card's network with its weights, on `device`, in eval mode.

    A "state_dict" card builds `card.architecture` and loads the state dict (weights_only); a "torchscript"
    card loads the file with `torch.jit.load`. Then, unless `check_output` is False, one dummy forward of a
    (1, C, *input.size) zero tensor must give (1, len(labels)) logits.

    Raises:
        WeightsMismatchError: the weights file's sha256 differs from `card.weights_sha256`.
        CardError: the architecture cannot be built, the state dict does not fit it, the TorchScript file
            does not load, or the model does not take the card's input or does not give one logit per label.
    """
    card.verify_weights()
    if card.format == "torchscript":
        try:
            model = torch.jit.load(str(card.weights_path), map_location="cpu")
        except RuntimeError as exc:
            raise CardError(f"model {card.name!r}: {card.weights} is not a loadable TorchScript file: {exc}") from exc
    else:
        model = build_from_card(card)
        # weights_only=True: a weights file is data, never code to unpickle.
        state = torch.load(card.weights_path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CardError(
                f"model {card.name!r}: {card.weights} does not fit {card.architecture.name}: {exc}"
            ) from exc
    model = model.to(device).eval()
    if check_output:
        check_output_shape(model, card, device=device)
    return model


def check_output_shape(model: nn.Module, card: ModelCard, *, device: str | torch.device = "cpu") -> None:
    """Raise `CardError` unless `model` maps a (1, C, *input.size) input to (1, K) logits, K = len(labels)."""
    x = torch.zeros(1, card.input.channels, *card.input.size, device=device)
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as exc:
        raise CardError(
            f"model {card.name!r} ({card.folder}): does not take the card's input shape {tuple(x.shape)}: {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, card.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CardError(
            f"model {card.name!r} ({card.folder}): output for input {tuple(x.shape)} is {shape}, but the card's "
            f"{card.num_classes} labels need (1, {card.num_classes})"
        )


def load_members(card: ModelCard, device: str | torch.device = "cpu") -> list[nn.Module]:
    """The ensemble members of an "ensemble" card (each a model folder inside the card's folder), loaded and
    checked like `load_model`; their labels and input must match the card's."""
    members = []
    for name in card.uncertainty.members:
        member = load_card(card.folder / name)
        if member.labels != card.labels or member.input != card.input:
            raise CardError(f"model {card.name!r}: ensemble member {name!r} has other labels or another input spec")
        members.append(load_model(member, device))
    return members
