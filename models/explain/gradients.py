"""Plain gradient methods, one forward + backward each.

- `Gradient`: d y_c / d x (Baehrens et al., "How to Explain Individual Classification Decisions", JMLR 2010).
- `Saliency`: |d y_c / d x| (Simonyan et al., "Deep Inside Convolutional Networks: Visualising Image
  Classification Models and Saliency Maps", ICLR workshop 2014, arXiv:1312.6034).
- `InputXGradient`: x * d y_c / d x (Shrikumar et al., "Not Just a Black Box", arXiv:1605.01713, 2016).

The three share one pass in a bundle (bundle.py): `from_gradient` turns that pass's gradient into each map.
"""

from __future__ import annotations

import torch

from models.explain.base import ChannelExplainer, gradient_pass


class Gradient(ChannelExplainer):
    """The signed gradient of the target logit with respect to the input.

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K) logits.

    `explain_channels(x (B, C, *spatial), target (B,) long) -> (B, C, *spatial)`; `explain` sums channels.
    Equal to Captum's `Saliency(abs=False)`.
    """

    name = "gradient"

    def explain_channels(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(x, target)
        grad = gradient_pass(self.model, x, target).input_grad
        assert grad is not None
        return self.from_gradient(x, grad)

    @staticmethod
    def from_gradient(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The map from the input x and the gradient at x, both (B, C, *spatial)."""
        return grad


class Saliency(Gradient):
    """Saliency map (Simonyan et al. 2014): the absolute gradient |d y_c / d x|, per channel.

    `explain` sums the channels' absolute gradients (Simonyan take the max over channels for display; the
    sum keeps one convention for all input-level methods). Equal to Captum's `Saliency(abs=True)`.
    """

    name = "saliency"

    @staticmethod
    def from_gradient(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.abs()


class InputXGradient(Gradient):
    """Input x gradient (Shrikumar et al. 2016): x * d y_c / d x, per channel; for a piecewise-linear net
    without biases its sum is the logit. Equal to Captum's `InputXGradient`."""

    name = "input_x_gradient"

    @staticmethod
    def from_gradient(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return x.detach() * grad
