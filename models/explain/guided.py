"""Methods that change how ReLUs pass gradients back (Springenberg et al., "Striving for Simplicity: The All
Convolutional Net", ICLR workshop 2015, arXiv:1412.6806), and Guided Grad-CAM (Selvaraju et al.,
"Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017).

The rules act on `nn.ReLU` modules only (`base.relu_rules`): networks must use one ReLU module per call
site and no functional `F.relu`, or the maps silently change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from models.card import ModelCard
from models.explain.base import ChannelExplainer, ReLURule, gradient_pass, resolve_layer
from models.explain.gradcam import GradCAM


class GuidedBackprop(ChannelExplainer):
    """Guided backpropagation (Springenberg et al. 2015): each ReLU passes back relu(g) * [y > 0], only the
    positive gradient where the unit was active.

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K), with `nn.ReLU` modules.

    `explain_channels(x (B, C, *spatial), target (B,) long) -> (B, C, *spatial)`. Equal to Captum's
    `GuidedBackprop`.
    """

    name = "guided_backprop"
    rule = ReLURule.GUIDED

    def explain_channels(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(x, target)
        grad = gradient_pass(self.model, x, target, rules=int(self.rule)).input_grad
        assert grad is not None
        return grad


class Deconvnet(GuidedBackprop):
    """Deconvnet (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, as
    framed by Springenberg et al. 2015): each ReLU passes back relu(g), ignoring whether the unit was
    active. Shapes as `GuidedBackprop`. Equal to Captum's `Deconvolution`."""

    name = "deconvnet"
    rule = ReLURule.DECONV


class GuidedGradCAM(ChannelExplainer):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the Grad-CAM map upsampled to
    the input (bilinear in 2D, trilinear in 3D), per channel.

    Both usually come from one guided pass: when no ReLU module runs after the layer, no rule lies between
    the layer and the logits, so the guided pass's layer gradient is Grad-CAM's. Otherwise a second pass,
    with the normal gradient and stopping at the layer, gives Grad-CAM (as Captum does).

    Args:
        model: a classifier in eval mode with `nn.ReLU` modules.
        layer: the module, or its dotted path (a card's `target_layer`), of the Grad-CAM map.

    `explain_channels(x (B, C, *spatial), target (B,) long) -> (B, C, *spatial)`. Equal to Captum's
    `GuidedGradCam(model, layer).attribute(x, target, interpolate_mode="bilinear")`.
    """

    name = "guided_gradcam"

    def __init__(self, model: nn.Module, layer: nn.Module | str) -> None:
        super().__init__(model)
        self.layer = resolve_layer(model, layer)

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> GuidedGradCAM:
        return cls(model, card.target_layer)

    def explain_channels(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(x, target)
        with _relus_after(self.model, self.layer) as after:
            guided = gradient_pass(self.model, x, target, layer=self.layer, rules=int(ReLURule.GUIDED))
        layer_pass = guided if not after else gradient_pass(self.model, x, target, layer=self.layer,
                                                              input_grad=False)
        assert guided.input_grad is not None and layer_pass.activations is not None
        assert layer_pass.layer_grad is not None
        cam = GradCAM.from_layer(layer_pass.activations, layer_pass.layer_grad, list(x.shape[2:]))
        return self.combine(guided.input_grad, cam)

    @staticmethod
    def combine(guided: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        """guided (B, C, *spatial) x Grad-CAM (B, 1, *spatial) -> (B, C, *spatial)."""
        return guided * cam


@contextmanager
def _relus_after(model: nn.Module, layer: nn.Module) -> Iterator[list[nn.Module]]:
    # The ReLU modules that run after `layer` has given its output, in the forward passes made while open.
    after: list[nn.Module] = []
    done = False

    def mark(*_: object) -> None:
        nonlocal done
        done = True

    def note(module: nn.Module, *_: object) -> None:
        if done and module is not layer:
            after.append(module)

    handles = [layer.register_forward_hook(mark)]
    try:
        handles += [m.register_forward_hook(note) for m in model.modules() if isinstance(m, nn.ReLU)]
        yield after
    finally:
        for handle in handles:
            handle.remove()
