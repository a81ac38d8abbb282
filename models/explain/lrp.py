"""Layer-wise relevance propagation as a modified gradient, 2D and 3D, on sequential, residual and dense nets.

Bach, Binder, Montavon, Klauschen, Müller and Samek, "On Pixel-Wise Explanations for Non-Linear Classifier
Decisions by Layer-Wise Relevance Propagation", PLoS ONE 2015; Montavon, Lapuschkin, Binder, Samek and
Müller, "Explaining nonlinear classification decisions with deep Taylor decomposition", Pattern
Recognition 2017; Montavon, Binder, Lapuschkin, Samek and Müller, "Layer-Wise Relevance Propagation: An
Overview", in Explainable AI, LNCS 11700, 2019; Kohlbrenner et al., "Towards Best Practice in Explaining
Neural Network Decisions with LRP", IJCNN 2020 (the composite).

How ("LRP as a modified gradient"): relevance at a layer's output z is R = z * g, with g the gradient
arriving there. A forward hook replaces each layer's output z by a tensor equal to z whose backward applies
the rule: for a rule that divides by a denominator d(a) and redistributes with contributions c(a)
(d = sum of c), the output becomes c * (z / d).detach() + (z - c * z / d).detach(). The input relevance is
then a * (the gradient at a), and at the input it is x * grad. Per layer type:

- Conv / Linear, epsilon rule: c = z, d = z + eps * sign(z) (biases are part of z, so they absorb
  relevance: with biases the sum leaks sum_j b_j * g_j per layer; the tests report it);
- Conv, z+ rule (alpha=1, beta=0, "Deep Taylor" for positive evidence; composite only):
  c = conv(a+, W+) + conv(a-, W-), bias-free;
- first layer (composite only): z^B with the input's bounds [low, high] (Montavon 2017), w^2 or flat;
  computed from the gradient at the first layer's output, as these rules are not input * gradient;
- average / adaptive average / max pooling: epsilon rule (max pooling: winner takes all);
- BatchNorm (eval mode, an affine map per channel; it cannot be folded into a convolution in pre-activation
  blocks such as DenseNet's, BN after a concatenation): `bn_rule="epsilon"` (default, as Captum) treats it
  as a linear layer whose shift absorbs relevance like a bias; `bn_rule="identity"` passes relevance on
  unchanged (R_in = R_out), which conserves exactly except where a BN input is exactly 0, but is unstable
  on trained nets: it moves the shift's relevance onto near-zero inputs, and the convolution below divides
  by them (measured on the DR DenseNet: relevance sums of 1e5 times the logit), so it is for tests only;
- ReLU, addition (residual), concatenation (dense), flatten, dropout: plain gradient, which passes the
  relevance on exactly (for a sum a + b, R_a = a * g and R_b = b * g: the proportional split).

Captum 0.9's LRP supports only 2D default rules (pytorch/captum#616, #1223), refuses reused modules and on a
ResNet-18 summed to -2.4e15 for a logit of 1.14 (PERF-NOTES); here hooks act per call, so any of these
nets works, and rows stay independent (eval mode).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import torch
from torch import nn

from models.card import ModelCard
from models.explain.base import Explainer

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
WEIGHTED = (*CONVS, nn.Linear)
POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
         nn.AdaptiveAvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
FIRST_RULES = ("zb", "w2", "flat")
_Weighted = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear  # the types of WEIGHTED


def _stabilise(d: torch.Tensor, eps: float) -> torch.Tensor:
    """d + eps * sign(d), with sign(0) = 1 (as Captum's epsilon rule)."""
    return d + eps * torch.where(d >= 0, 1.0, -1.0).to(d)


def _route(z: torch.Tensor, contribution: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """A tensor equal to z whose backward is contribution's backward scaled by z / denominator."""
    scale = (z / denominator).detach()
    return contribution * scale + (z - contribution * scale).detach()


def _linear_map(module: _Weighted, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`module`'s convolution or matrix product with another weight and no bias."""
    if isinstance(module, nn.Linear):
        return nn.functional.linear(a, weight)
    return module._conv_forward(a, weight, None)


def _z_plus(module: _Weighted, a: torch.Tensor) -> torch.Tensor:
    """Positive contributions only (alpha=1, beta=0): a+ W+ + a- W-, bias-free."""
    w = module.weight
    return _linear_map(module, a.clamp(min=0), w.clamp(min=0)) + _linear_map(module, a.clamp(max=0), w.clamp(max=0))


@dataclass
class _FirstLayerCall:
    module: _Weighted
    x: torch.Tensor
    z: torch.Tensor  # a leaf standing for the layer's output; its gradient is g at the first layer


@dataclass
class _Rules:
    """Which rule each layer type gets, and what the first-layer calls recorded during the forward."""

    epsilon: float
    bn_rule: str = "epsilon"  # or "identity"
    conv_rule: str = "epsilon"  # or "zplus"
    first_rule: str | None = None  # None: the first layer is like any other
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    first_calls: list[_FirstLayerCall] = field(default_factory=list)

    def hook(self, model_input: torch.Tensor) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
        def apply(module: nn.Module, inputs: tuple[Any, ...], z: Any) -> Any:
            a = inputs[0]
            if not isinstance(z, torch.Tensor) or not isinstance(a, torch.Tensor):
                return None
            if isinstance(module, NORMS) and self.bn_rule == "identity":
                return _route(z, a, _stabilise(a, self.epsilon))
            if isinstance(module, WEIGHTED) and a is model_input and self.first_rule is not None:
                leaf = z.detach().requires_grad_(True)
                self.first_calls.append(_FirstLayerCall(module, a.detach(), leaf))
                return leaf
            if isinstance(module, CONVS) and self.conv_rule == "zplus":
                contribution = _z_plus(module, a)
                return _route(z, contribution, contribution + self.epsilon)
            return _route(z, z, _stabilise(z, self.epsilon))

        return apply

    def first_layer_relevance(self, call: _FirstLayerCall, g: torch.Tensor) -> torch.Tensor:
        """(B, C, *s) relevance of the first layer's input from R = z * g at its output."""
        module, x = call.module, call.x
        relevance = call.z.detach() * g
        w = module.weight.detach()
        with torch.enable_grad():
            if self.first_rule == "zb":
                low, high = self._bounds(x)
                leaves = [t.detach().requires_grad_(True) for t in (x, low, high)]
                contribution = (_linear_map(module, leaves[0], w) - _linear_map(module, leaves[1], w.clamp(min=0))
                                - _linear_map(module, leaves[2], w.clamp(max=0)))
                values = [x, low, high]
            else:
                weight = w * w if self.first_rule == "w2" else torch.ones_like(w)
                leaves = [torch.ones_like(x).requires_grad_(True)]
                contribution = _linear_map(module, leaves[0], weight)
                values = [leaves[0].detach()]
            s = (relevance / _stabilise(contribution, self.epsilon)).detach()
            grads = torch.autograd.grad((contribution * s).sum(), leaves)
        return reduce(operator.add, (v * gr for v, gr in zip(values, grads, strict=True)))

    def _bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Without given bounds, each row's own range (over all elements) stands in for the data range.
        dims = tuple(range(1, x.dim()))
        low = self.low.to(x) if self.low is not None else x.amin(dim=dims, keepdim=True)
        high = self.high.to(x) if self.high is not None else x.amax(dim=dims, keepdim=True)
        shape = (1, -1, *([1] * (x.dim() - 2))) if low.dim() == 1 else low.shape
        return low.view(shape).expand_as(x), high.view(shape).expand_as(x)


@contextmanager
def _hooks(model: nn.Module, hook: Callable) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, WEIGHTED + POOLS + NORMS)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def lrp_relevance(model: nn.Module, x: torch.Tensor, target: torch.Tensor, rules: _Rules) -> torch.Tensor:
    """(B, C, *s) input relevance of each row's target logit under `rules`."""
    rules.first_calls = []
    with torch.enable_grad():
        xin = x.detach().requires_grad_(True)
        with _hooks(model, rules.hook(xin)):
            logits = model(xin)
        score = logits.gather(1, target.view(-1, 1)).sum()
        leaves = [xin] + [call.z for call in rules.first_calls]
        grads = torch.autograd.grad(score, leaves, allow_unused=True)
    relevance = torch.zeros_like(x) if grads[0] is None else x.detach() * grads[0]
    for call, g in zip(rules.first_calls, grads[1:], strict=True):
        if g is not None:
            relevance = relevance + rules.first_layer_relevance(call, g)
    rules.first_calls = []
    return relevance


class LRPEpsilon(Explainer):
    """LRP-epsilon (Bach et al., PLoS ONE 2015) on every Conv / Linear / pooling layer, 2D and 3D.

    Relevance sums to the target logit minus what biases and batch-norm shifts absorb (and an O(eps) leak);
    with eps -> 0 on a ReLU net it equals gradient * input. Equal to
    Captum's `LRP` (EpsilonRule with the same epsilon) on sequential Conv / ReLU / pooling / Linear nets.

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K) logits.
        epsilon: the stabiliser added to each denominator (larger values absorb weak, contradictory relevance).
        bn_rule: "epsilon" or "identity" (see the module docstring).
    """

    name = "lrp_epsilon"

    def __init__(self, model: nn.Module, epsilon: float = 1e-6, bn_rule: str = "epsilon") -> None:
        super().__init__(model)
        self.epsilon, self.bn_rule = epsilon, bn_rule

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, *spatial); target (B,) long. Returns: (B, 1, *spatial) relevance."""
        self._check(x, target)
        rules = _Rules(self.epsilon, bn_rule=self.bn_rule)
        return lrp_relevance(self.model, x, target, rules).sum(dim=1, keepdim=True)


class LRPComposite(Explainer):
    """Composite LRP (Montavon et al. 2019; Kohlbrenner et al. 2020), 2D and 3D.

    Epsilon rule on Linear (upper) layers and pooling, z+ (alpha=1, beta=0, Deep Taylor) on convolutions,
    and a first-layer rule for the layers reading the input: z^B bounded by the input's range (from the
    card: pixel values 0 and 1 normalised by its mean and std), w^2, or flat.

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K) logits.
        epsilon: stabiliser of every denominator.
        first_rule: "zb", "w2" or "flat".
        low, high: (C,) or (B, C, *spatial) bounds of the input for "zb"; default each row's min and max.
        bn_rule: "epsilon" or "identity" (see the module docstring).
    """

    name = "lrp_composite"

    def __init__(self, model: nn.Module, epsilon: float = 1e-6, first_rule: str = "zb",
                 low: torch.Tensor | None = None, high: torch.Tensor | None = None, bn_rule: str = "epsilon") -> None:
        super().__init__(model)
        if first_rule not in FIRST_RULES:
            raise ValueError(f"first_rule must be one of {FIRST_RULES}, got {first_rule!r}")
        self.epsilon, self.first_rule, self.low, self.high = epsilon, first_rule, low, high
        self.bn_rule = bn_rule

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> LRPComposite:
        mean, std = torch.tensor(card.input.mean), torch.tensor(card.input.std)
        return cls(model, low=(0.0 - mean) / std, high=(1.0 - mean) / std)

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, *spatial); target (B,) long. Returns: (B, 1, *spatial) relevance."""
        self._check(x, target)
        rules = _Rules(self.epsilon, bn_rule=self.bn_rule, conv_rule="zplus", first_rule=self.first_rule,
                       low=self.low, high=self.high)
        return lrp_relevance(self.model, x, target, rules).sum(dim=1, keepdim=True)
