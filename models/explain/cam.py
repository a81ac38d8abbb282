"""Class activation maps without and with second-order gradient weights.

- `CAM`: Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016 (arXiv:1512.04150).
- `GradCAMPlusPlus`: Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for
  Deep Convolutional Networks", WACV 2018 (arXiv:1710.11063). Captum has neither.

Both read the target layer's activations A (B, K, *s) and return (B, 1, *spatial), upsampled bilinearly
(2D) or trilinearly (3D) like Grad-CAM. `from_layer` computes the map from a pass a bundle shares.
"""

from __future__ import annotations

import torch
from torch import nn

from models.card import ModelCard
from models.explain.base import Explainer, gradient_pass, record_output, resolve_layer, spatial_sum, upsample


class CAM(Explainer):
    """Class activation map (Zhou et al. 2016) for nets ending in global average pooling + one Linear.

    map_c = sum_k W[c, k] A_k, with W the final Linear's weight: raw and signed (no ReLU, no bias), so that
    its spatial mean plus the bias is the logit y_c. Needs only a forward pass.

    Args:
        model: a classifier in eval mode whose last `nn.Linear` takes the global average of `layer`'s output.
        layer: the module, or its dotted path (a card's `target_layer`): the last feature map.

    Raises ValueError, on the first `explain`, if the logits are not that Linear applied to the spatial mean
    of the layer's output (another head, or a layer that is not the last feature map).
    """

    name = "cam"

    def __init__(self, model: nn.Module, layer: nn.Module | str) -> None:
        super().__init__(model)
        self.layer = resolve_layer(model, layer)
        self.linear = final_linear(model)

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> CAM:
        return cls(model, card.target_layer)

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, *spatial); target (B,) long. Returns: (B, 1, *spatial) signed maps."""
        self._check(x, target)
        with torch.no_grad(), record_output(self.layer) as record:
            logits = self.model(x)
        if not isinstance(record.output, torch.Tensor):
            raise ValueError(f"the target layer {self.layer.__class__.__name__} did not output one tensor")
        return self.from_layer(record.output, logits, target, self.linear, list(x.shape[2:]))

    @staticmethod
    def from_layer(activations: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, linear: nn.Linear,
                   spatial: list[int]) -> torch.Tensor:
        """The maps from activations (B, K, *s) and logits (B, classes) of one forward pass."""
        check_gap_linear(activations, logits, linear)
        weights = linear.weight.detach()[target]  # (B, K): the target class's row
        cam = torch.einsum("bk...,bk->b...", activations.detach(), weights).unsqueeze(1)
        return upsample(cam, spatial)


def final_linear(model: nn.Module) -> nn.Linear:
    """The model's last `nn.Linear` module, in registration order. Raises ValueError if it has none."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("CAM needs a network ending in global average pooling + nn.Linear; this one has no "
                         "nn.Linear")
    return linears[-1]


def check_gap_linear(activations: torch.Tensor, logits: torch.Tensor, linear: nn.Linear) -> None:
    """Raise ValueError unless logits == linear(spatial mean of activations), i.e. CAM is exact."""
    if activations.dim() < 3 or activations.shape[1] != linear.in_features:
        raise ValueError(f"CAM: the target layer outputs {tuple(activations.shape)}, but the final Linear takes "
                         f"{linear.in_features} features; CAM needs global average pooling of that layer, then "
                         "the Linear")
    pooled = activations.detach().mean(dim=tuple(range(2, activations.dim())))
    expected = nn.functional.linear(pooled, linear.weight.detach(), linear.bias.detach() if linear.bias is not None
                                    else None)
    tolerance = 1e-4 * (1.0 + logits.detach().abs().max())
    if (expected - logits.detach()).abs().max() > tolerance:
        raise ValueError("CAM: the logits are not the final Linear applied to the global average of the target "
                         "layer's output; CAM needs a network ending in global average pooling + Linear")


class GradCAMPlusPlus(Explainer):
    """Grad-CAM++ (Chattopadhay et al. 2018), in the paper's closed form.

    With S_c = exp(y_c) and g = dy_c/dA, the exponential makes the higher derivatives closed-form powers of
    g (exact for piecewise-linear nets): dS/dA = S g, d2S/dA2 = S g^2, d3S/dA3 = S g^3. Per channel k and
    position ab (eq. 19 and 10 of the paper):

        alpha_kab = g_kab^2 / (2 g_kab^2 + sum_ij A_kij g_kab^3)   (0 where the denominator is 0)
        w_k = sum_ab alpha_kab relu(g_kab),   map = ReLU(sum_k w_k A_k)

    The paper's weights carry the factor S_c = exp(y_c) > 0 (it cancels in alpha): it only scales each row's
    map and overflows float32 for logits above ~88, so it is left out, as pytorch-grad-cam does.

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K) logits.
        layer: the module, or its dotted path (a card's `target_layer`), usually the last feature map.

    `explain(x (B, C, *spatial), target (B,) long) -> (B, 1, *spatial)`, non-negative.
    """

    name = "gradcam_pp"

    def __init__(self, model: nn.Module, layer: nn.Module | str) -> None:
        super().__init__(model)
        self.layer = resolve_layer(model, layer)

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> GradCAMPlusPlus:
        return cls(model, card.target_layer)

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(x, target)
        result = gradient_pass(self.model, x, target, layer=self.layer, input_grad=False)
        assert result.activations is not None and result.layer_grad is not None
        return self.from_layer(result.activations, result.layer_grad, list(x.shape[2:]))

    @staticmethod
    def from_layer(activations: torch.Tensor, gradients: torch.Tensor, spatial: list[int]) -> torch.Tensor:
        """The maps from the layer's activations A and gradients dy_c/dA, both (B, K, *s): (B, 1, *spatial)."""
        g2 = gradients.pow(2)
        denominator = 2 * g2 + spatial_sum(activations) * gradients.pow(3)
        alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
        weights = spatial_sum(alpha * torch.relu(gradients))
        cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
        return upsample(cam, spatial)
