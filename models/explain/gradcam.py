"""Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017 (arXiv:1610.02391)."""

from __future__ import annotations

import torch
from torch import nn

from models.card import ModelCard
from models.explain.base import Explainer, gradient_pass, resolve_layer, upsample


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
        # The backward stops at the layer: the input's gradient is not needed.
        result = gradient_pass(self.model, x, target, layer=self.layer, input_grad=False)
        assert result.activations is not None and result.layer_grad is not None
        return self.from_layer(result.activations, result.layer_grad, list(x.shape[2:]))

    @staticmethod
    def from_layer(activations: torch.Tensor, gradients: torch.Tensor, spatial: list[int]) -> torch.Tensor:
        """The maps from the layer's activations A and gradients dy_c/dA, both (B, K, *s): (B, 1, *spatial)."""
        weights = gradients.mean(dim=tuple(range(2, gradients.dim())), keepdim=True)
        cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
        return upsample(cam, spatial)
