"""Class probabilities from a classifier, with temperature scaling (Guo et al., ICML 2017)."""

from __future__ import annotations

import torch
from torch import nn


def predict(model: nn.Module, x: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """softmax(model(x) / temperature) without gradients.

    Args:
        model: a classifier in the state wanted (eval mode for a plain prediction), on `x`'s device.
        x: (B, C, *spatial) input, prepared as the model's card says.
        temperature: the card's `calibration_temperature`; 1.0 leaves the logits as they are.

    Returns:
        (B, K) float probabilities; each row sums to 1.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.no_grad():
        logits = model(x)
        return torch.softmax(logits.float() / temperature, dim=1)
