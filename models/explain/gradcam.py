"""Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017 (arXiv:1610.02391)."""

from __future__ import annotations

import torch
from torch import nn

from models.card import ModelCard
from models.explain.base import Explainer, record_output, resolve_layer, upsample


class GradCAM(Explainer):
    """Grad-CAM on a convolutional layer, 2D or 3D.

    For target class c and the layer's activations A (B, K, *s): weights a_k = mean over s of dy_c/dA_k,
    map = ReLU(sum_k a_k A_k), upsampled to the input's spatial size (bilinear in 2D, trilinear in 3D).
    Equal to Captum's `LayerGradCam(relu_attributions=True)` followed by `LayerAttribution.interpolate`
    with the same mode.

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K) logits.
        layer: the module, or its dotted path (a card's `target_layer`), whose output is explained;
            usually the last feature map.
    """

    name = "gradcam"

    def __init__(self, model: nn.Module, layer: nn.Module | str) -> None:
        super().__init__(model)
        self.layer = resolve_layer(model, layer)

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> GradCAM:
        return cls(model, card.target_layer)

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, *spatial); target (B,) long. Returns: (B, 1, *spatial) non-negative maps."""
        self._check(x, target)
        _, _, *spatial = x.shape
        activations, gradients = self._activations_and_gradients(x, target)
        weights = gradients.mean(dim=tuple(range(2, gradients.dim())), keepdim=True)
        cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
        return upsample(cam, spatial)

    def _activations_and_gradients(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The input requires grad so the layer's output is in the graph even when the weights are frozen;
        # autograd.grad computes only what the layer needs and leaves the parameters' .grad untouched.
        with torch.enable_grad(), record_output(self.layer) as record:
            logits = self.model(x.detach().requires_grad_(True))
            # Summing the rows' target logits gives each row its own gradient, as rows do not interact
            # in eval mode.
            score = logits.gather(1, target.view(-1, 1)).sum()
            if not isinstance(record.output, torch.Tensor):
                raise ValueError(f"the target layer {self.layer.__class__.__name__} did not output one tensor")
            (gradients,) = torch.autograd.grad(score, record.output)
        return record.output.detach(), gradients
