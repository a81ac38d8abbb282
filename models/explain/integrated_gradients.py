"""Integrated gradients and expressive gradients.

- `IntegratedGradients`: Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017
  (arXiv:1703.01365). IG_i(x) = (x_i - b_i) * integral_0^1 dy_c/dx_i (b + a (x - b)) da, by quadrature.
- `ExpressiveGradients`: Yang et al., "Weakly supervised lesion localization for age-related macular
  degeneration detection using optical coherence tomography images", PLoS ONE 14(4), 2019 (the review's
  [39]): IG "enriched with high-level attribution maps" (see the class for exactly what is computed).

The path points of all rows go through the network in memory-bounded batches (batching.py), never as one
batch of n_steps x B rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.card import ModelCard
from models.explain.base import ChannelExplainer, Explainer, gradient_pass, record_output, resolve_layer, upsample
from models.explain.batching import chunks, rows_per_batch

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
Baseline = str | float | torch.Tensor


def path_weights(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """Quadrature points alpha in [0, 1] and their weights for `method` with `n_steps` points.

    The Riemann rules and Gauss-Legendre equal Captum's, except "riemann_trapezoid": Captum weighs its
    n points 1/n (halved at the ends), whose weights sum to (n - 1) / n; here they are 1/(n - 1) (halved at
    the ends), the trapezoid rule on n points, summing to 1 so completeness holds for a linear model.
    """
    if method == "gausslegendre":
        if n_steps < 1:
            raise ValueError("n_steps must be >= 1")
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()
    if method not in METHODS:
        raise ValueError(f"unknown integration method {method!r}; known: {METHODS}")
    if n_steps < 2:
        raise ValueError("n_steps must be >= 2 for a Riemann rule")
    n = n_steps
    if method == "riemann_trapezoid":
        step = 1 / (n - 1)
        return torch.linspace(0, 1, n).tolist(), [step / 2] + [step] * (n - 2) + [step / 2]
    start = {"riemann_left": 0.0, "riemann_right": 1 / n, "riemann_middle": 1 / (2 * n)}[method]
    return torch.linspace(start, start + 1 - 1 / n, n).tolist(), [1 / n] * n


def make_baseline(x: torch.Tensor, baseline: Baseline, *, sigma: float | None = None) -> torch.Tensor:
    """The baseline (B, C, *spatial) for x: "zeros", a constant (float), "blur" (x blurred by a Gaussian of
    `sigma` pixels, default 1/20 of the largest spatial size; Sturmfels et al., Distill 2020), or a tensor
    broadcastable to x."""
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x.device, x.dtype).expand_as(x)
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "blur":
        return gaussian_blur(x, sigma if sigma is not None else max(x.shape[2:]) / 20)
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    raise ValueError(f"unknown baseline {baseline!r}: use 'zeros', 'blur', a number or a tensor")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (B, C, *spatial) blurred per channel by a separable Gaussian (reflect padding), 1D to 3D."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    b, c, *spatial = x.shape
    out = x.detach().reshape(b * c, 1, *spatial)
    conv = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}[len(spatial)]
    for dim, size in enumerate(spatial):
        pad = min(radius, size - 1)  # reflect padding needs pad < size
        shape = [1, 1] + [1] * len(spatial)
        shape[2 + dim] = 2 * radius + 1
        padding = [0, 0] * len(spatial)
        padding[2 * (len(spatial) - 1 - dim)] = padding[2 * (len(spatial) - 1 - dim) + 1] = pad
        padded = nn.functional.pad(out, padding, mode="reflect")
        if pad < radius:  # images smaller than the kernel: pad the rest with the edge value
            extra = [0, 0] * len(spatial)
            extra[2 * (len(spatial) - 1 - dim)] = extra[2 * (len(spatial) - 1 - dim) + 1] = radius - pad
            padded = nn.functional.pad(padded, extra, mode="replicate")
        out = conv(padded, kernel.view(shape))
    return out.reshape(b, c, *spatial)


@dataclass
class PathIntegral:
    """What `integrate` returns: sum_i w_i * gradient at point i, for the input (B, C, *spatial) and, if a
    layer was given, for the layer's output (B, K, *s) with its activations at x and at the baseline;
    `delta_target`: f_c(x) - f_c(b), (B,)."""

    input_grad: torch.Tensor
    delta_target: torch.Tensor
    layer_grad: torch.Tensor | None = None
    layer_at_x: torch.Tensor | None = None
    layer_at_baseline: torch.Tensor | None = None


def integrate(model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor,
              alphas: list[float], weights: list[float], *, layer: nn.Module | None = None,
              max_rows: int | None = None) -> PathIntegral:
    """The weighted sum of gradients along the straight path from `baseline` to `x`, (B, C, *spatial) each.

    The len(alphas) x B path rows (step-major, as Captum orders them) are made and sent batch by batch, at
    most `rows_per_batch` rows at once; a forward of x and the baseline gives f(x) - f(b) (and the layer's
    activations at both ends, for layer integrated gradients).
    """
    b = x.shape[0]
    x, baseline = x.detach(), baseline.detach()
    alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device)
    weight = torch.tensor(weights, dtype=x.dtype, device=x.device)
    n_rows = len(alphas) * b
    size = rows_per_batch(model, x[:1], max_rows=max_rows, rows_needed=n_rows)
    total = torch.zeros_like(x)
    layer_total: torch.Tensor | None = None
    for part in chunks(n_rows, size):
        rows = torch.arange(part.start, part.stop, device=x.device)
        step, image = rows // b, rows % b
        shape = (-1,) + (1,) * (x.dim() - 1)
        points = baseline[image] + alpha[step].view(shape) * (x[image] - baseline[image])
        result = gradient_pass(model, points, target[image], layer=layer)
        assert result.input_grad is not None
        total.index_add_(0, image, result.input_grad * weight[step].view(shape))
        if result.layer_grad is not None:
            if layer_total is None:
                layer_total = result.layer_grad.new_zeros((b, *result.layer_grad.shape[1:]))
            layer_shape = (-1,) + (1,) * (result.layer_grad.dim() - 1)
            layer_total.index_add_(0, image, result.layer_grad * weight[step].view(layer_shape))
    ends = _ends(model, torch.cat([x, baseline]), torch.cat([target, target]), layer)
    delta_target = ends[0][:b] - ends[0][b:]
    integral = PathIntegral(input_grad=total, delta_target=delta_target, layer_grad=layer_total)
    if ends[1] is not None:
        integral.layer_at_x, integral.layer_at_baseline = ends[1][:b], ends[1][b:]
    return integral


def _ends(model: nn.Module, rows: torch.Tensor, target: torch.Tensor,
          layer: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    # Target logits (and the layer's output) at x and at the baseline, without a backward.
    with torch.no_grad():
        if layer is None:
            return model(rows).gather(1, target.view(-1, 1)).squeeze(1), None
        with record_output(layer) as record:
            logits = model(rows)
        return logits.gather(1, target.view(-1, 1)).squeeze(1), record.output


class IntegratedGradients(ChannelExplainer):
    """Integrated gradients (Sundararajan et al. 2017) along the straight path from a baseline.

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K).
        n_steps: quadrature points (gradient passes per row).
        method: "gausslegendre" (Captum's default), "riemann_trapezoid", "riemann_middle", "riemann_left"
            or "riemann_right" (see `path_weights`).
        baseline: "zeros", a constant, "blur" or a tensor broadcastable to x (see `make_baseline`).
        blur_sigma: the Gaussian's sigma in pixels for baseline="blur".
        max_rows: cap on path rows per batch (default: batching.DEFAULT_MAX_ROWS, lowered to fit memory).

    `explain_channels(x (B, C, *spatial), target (B,) long) -> (B, C, *spatial)`; afterwards `last_delta`
    (B,) holds the convergence delta sum(IG) - (f_c(x) - f_c(b)) of each row, which shrinks with n_steps.
    Equal to Captum's `IntegratedGradients` with the same n_steps and method (trapezoid: see `path_weights`).
    """

    name = "integrated_gradients"

    def __init__(self, model: nn.Module, *, n_steps: int = 50, method: str = "gausslegendre",
                 baseline: Baseline = "zeros", blur_sigma: float | None = None, max_rows: int | None = None) -> None:
        super().__init__(model)
        self.alphas, self.weights = path_weights(method, n_steps)
        self.n_steps, self.method, self.baseline = n_steps, method, baseline
        self.blur_sigma, self.max_rows = blur_sigma, max_rows
        self.last_delta: torch.Tensor | None = None

    def explain_channels(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(x, target)
        baseline = make_baseline(x, self.baseline, sigma=self.blur_sigma)
        integral = integrate(self.model, x, baseline, target, self.alphas, self.weights, max_rows=self.max_rows)
        attribution, self.last_delta = self.from_integral(x, baseline, integral)
        return attribution

    @staticmethod
    def from_integral(x: torch.Tensor, baseline: torch.Tensor,
                      integral: PathIntegral) -> tuple[torch.Tensor, torch.Tensor]:
        """IG (B, C, *spatial) and its convergence delta (B,) from a path integral."""
        attribution = (x.detach() - baseline) * integral.input_grad
        delta = attribution.flatten(1).sum(1) - integral.delta_target
        return attribution, delta


class ExpressiveGradients(Explainer):
    """Expressive gradients (Yang et al. 2019): input-level IG enriched with a high-level attribution map.

    What is computed, in one set of path passes: IG of the input, summed over channels (B, 1, *spatial);
    layer integrated gradients of `layer` over the same input path, (A(x) - A(b)) * integral dy_c/dA da,
    summed over channels (B, 1, *s) (Captum's `LayerIntegratedGradients`); the layer map is upsampled to
    the input size and multiplied by |s| / |spatial| (its number of positions over the input's) so that both
    maps carry the same total, f_c(x) - f_c(b) up to the delta. The result is

        EG = (1 - layer_weight) * IG_input + layer_weight * upsample(IG_layer) * |s| / |spatial|.

    This follows the review's description of EG ("extends IG by enriching input-level attribution map with
    high-level attribution maps"); the paper's exact weighting was not available here.

    Args: as `IntegratedGradients`, plus `layer` (module or dotted path, a card's `target_layer`) and
    `layer_weight` in [0, 1]. `explain(x (B, C, *spatial), target (B,)) -> (B, 1, *spatial)`; afterwards
    `last_delta` (B,) is the input IG's delta and `last_layer_map` (B, 1, *s) the raw layer map.
    """

    name = "expressive_gradients"

    def __init__(self, model: nn.Module, layer: nn.Module | str, *, layer_weight: float = 0.5, n_steps: int = 50,
                 method: str = "gausslegendre", baseline: Baseline = "zeros", blur_sigma: float | None = None,
                 max_rows: int | None = None) -> None:
        super().__init__(model)
        self.layer = resolve_layer(model, layer)
        self.layer_weight = layer_weight
        self.ig = IntegratedGradients(model, n_steps=n_steps, method=method, baseline=baseline,
                                      blur_sigma=blur_sigma, max_rows=max_rows)
        self.last_delta: torch.Tensor | None = None
        self.last_layer_map: torch.Tensor | None = None

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> ExpressiveGradients:
        return cls(model, card.target_layer)

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(x, target)
        ig = self.ig
        baseline = make_baseline(x, ig.baseline, sigma=ig.blur_sigma)
        integral = integrate(self.model, x, baseline, target, ig.alphas, ig.weights, layer=self.layer,
                             max_rows=ig.max_rows)
        attribution, self.last_delta = IntegratedGradients.from_integral(x, baseline, integral)
        result, self.last_layer_map = self.from_integral(attribution, integral, self.layer_weight)
        return result

    @staticmethod
    def from_integral(input_ig: torch.Tensor, integral: PathIntegral,
                      layer_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """EG (B, 1, *spatial) and the raw layer map (B, 1, *s) from the input IG (B, C, *spatial) and a path
        integral taken with the layer."""
        if integral.layer_grad is None or integral.layer_at_x is None or integral.layer_at_baseline is None:
            raise ValueError("expressive gradients need a path integral with the layer")
        layer_map = ((integral.layer_at_x - integral.layer_at_baseline) * integral.layer_grad).sum(1, keepdim=True)
        spatial = list(input_ig.shape[2:])
        scale = math.prod(layer_map.shape[2:]) / math.prod(spatial)
        enriched = upsample(layer_map, spatial) * scale
        return (1 - layer_weight) * input_ig.sum(1, keepdim=True) + layer_weight * enriched, layer_map

