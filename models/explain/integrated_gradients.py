"""Integrated gradients and expressive gradients.

- `IntegratedGradients`: Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017
  (arXiv:1703.01365). IG_i(x) = (x_i - b_i) * integral_0^1 dy_c/dx_i (b + a (x - b)) da, by quadrature.
- `ExpressiveGradients`: Yang et al., "Weakly supervised lesion localization for age-related macular
  degeneration detection using optical coherence tomography images", PLoS ONE 14(4), 2019 (the review's
  [39]): IG "enriched with high-level attribution maps" (see the class for exactly what is computed).

The path points of all rows go through the network in memory-bounded batches (batching.py), never as one
batch of n_steps x B rows; the rows at x and at the baseline (for the convergence delta) ride along.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.card import ModelCard
from models.explain.base import ChannelExplainer, Explainer, Pass, resolve_layer, upsample
from models.explain.batching import RowGroup, batched_passes, chunks, rows_per_batch

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
    """What `integrate` returns: sum_i w_i * gradient at point i for the input (B, C, *spatial); if a layer
    was given, the layer's activations (B, K, *s) at x and at the baseline (the ends of the layer's own path,
    `layer_path_gradient`); `delta_target`: f_c(x) - f_c(b), (B,)."""

    input_grad: torch.Tensor
    delta_target: torch.Tensor
    layer_at_x: torch.Tensor | None = None
    layer_at_baseline: torch.Tensor | None = None


class PathRows:
    """The rows of a path integral as `RowGroup`s for `batched_passes`, and the `PathIntegral` they add up to.

    `groups`: the len(alphas) x B path rows (step-major, as Captum orders them), each batch's points made
    when it is due; then the rows at the ends, the baseline and (unless `with_x` is False) x, whose logits
    (and layer activations) give f(x) - f(b). The ends ride along in the path's batches, their gradients
    unused: two rows more, instead of a forward pass of their own (on a shared CPU each pass pays a toll
    beyond its rows: docs/benchmarks.md). Without `with_x`, `integral(at_x=...)` takes x's from a pass made elsewhere.
    `with_layer`: also keep the recorded layer's activations at the ends (for layer integrated gradients).
    """

    def __init__(self, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor, alphas: list[float],
                 weights: list[float], *, with_x: bool = True, with_layer: bool = False) -> None:
        self.x, self.baseline, self.target, self.with_layer = x.detach(), baseline.detach(), target, with_layer
        self.alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device)
        self.weight = torch.tensor(weights, dtype=x.dtype, device=x.device)
        self.diff = self.x - self.baseline
        self.total = torch.zeros_like(x)
        ends = torch.cat([self.baseline, self.x]) if with_x else self.baseline
        end_target = target.repeat(len(ends) // len(x))
        self.ends = RowGroup(len(ends), lambda part: (ends[part], end_target[part]))
        self.groups = [RowGroup(len(alphas) * len(x), self._points, self._add), self.ends]

    def _step_image(self, part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(part.start, part.stop, device=self.x.device)
        return rows // len(self.x), rows % len(self.x)

    def _points(self, part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        step, image = self._step_image(part)
        alpha = self.alpha[step].view((-1,) + (1,) * (self.x.dim() - 1))
        if len(self.x) == 1:  # one image: broadcast it rather than gather copies of it
            return torch.addcmul(self.baseline, alpha, self.diff), self.target[image]
        return torch.addcmul(self.baseline[image], alpha, self.diff[image]), self.target[image]

    def _add(self, part: slice, result: Pass) -> None:
        step, image = self._step_image(part)
        assert result.input_grad is not None
        self.total.index_add_(0, image, result.input_grad * self.weight[step].view((-1,) + (1,) * (self.x.dim() - 1)))

    def integral(self, at_x: Pass | None = None) -> PathIntegral:
        """The integral once the groups went through; `at_x`: the logits (and activations) of x's rows, in
        the order of x, when x was not among the ends."""
        b = len(self.x)
        ends = self.ends.collected()
        at_b = ends.rows(slice(0, b))
        at_x = at_x if at_x is not None else ends.rows(slice(b, 2 * b))
        index = self.target.view(-1, 1)
        delta_target = (at_x.logits.gather(1, index) - at_b.logits.gather(1, index)).squeeze(1)
        integral = PathIntegral(input_grad=self.total, delta_target=delta_target)
        if self.with_layer:
            integral.layer_at_x, integral.layer_at_baseline = at_x.activations, at_b.activations
        return integral


def integrate(model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor,
              alphas: list[float], weights: list[float], *, layer: nn.Module | None = None,
              max_rows: int | None = None) -> PathIntegral:
    """The weighted sum of gradients along the straight path from `baseline` to `x`, (B, C, *spatial) each.

    The len(alphas) x B path rows and the 2 x B rows at the ends (for f(x) - f(b), and the layer's
    activations at both ends for layer integrated gradients) go through in memory-bounded batches, at most
    `rows_per_batch` rows at once (`PathRows`, `batched_passes`).
    """
    path = PathRows(x, baseline, target, alphas, weights, with_layer=layer is not None)
    batched_passes(model, path.groups, like=x[:1], layer=layer, max_rows=max_rows)
    return path.integral()


@contextmanager
def _layer_output_replaced(layer: nn.Module, value: torch.Tensor) -> Iterator[None]:
    """While open, `layer` outputs `value` whatever its input (the hook is always removed)."""
    handle = layer.register_forward_hook(lambda module, inputs, output: value)
    try:
        yield
    finally:
        handle.remove()


def layer_path_gradient(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor,
                        layer_at_x: torch.Tensor, layer_at_baseline: torch.Tensor, alphas: list[float],
                        weights: list[float], *, max_rows: int | None = None) -> torch.Tensor:
    """sum_i w_i * dy_c/dA at A(b) + alpha_i (A(x) - A(b)): the gradient integrated along the straight line
    between the layer's activations (B, K, *s), as Captum's `LayerIntegratedGradients` does.

    The path runs in the layer's space, not the input's: the layer's output is replaced by each point while
    the rest of the network sees x. (A(b + a (x - b)) is no straight line from A(b) to A(x) when the layers
    before are nonlinear, and gradients taken there do not add up to f(x) - f(b).) Memory-bounded batches.
    """
    b, n = len(x), len(alphas)
    alpha = torch.tensor(alphas, dtype=layer_at_x.dtype, device=x.device)
    weight = torch.tensor(weights, dtype=layer_at_x.dtype, device=x.device)
    difference = (layer_at_x - layer_at_baseline).detach()
    shape = (-1,) + (1,) * (difference.dim() - 1)
    total = torch.zeros_like(difference)
    for part in chunks(n * b, rows_per_batch(model, x[:1], max_rows=max_rows, rows_needed=n * b)):
        rows = torch.arange(part.start, part.stop, device=x.device)
        step, image = rows // b, rows % b
        points = (layer_at_baseline.detach()[image] + alpha[step].view(shape) * difference[image]).requires_grad_(True)
        with torch.enable_grad(), _layer_output_replaced(layer, points):
            score = model(x.detach()[image]).gather(1, target[image].view(-1, 1)).sum()
            (gradient,) = torch.autograd.grad(score, points)
        total.index_add_(0, image, gradient * weight[step].view(shape))
    return total


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

    What is computed: IG of the input, summed over channels (B, 1, *spatial); layer integrated gradients of
    `layer`, (A(x) - A(b)) * integral dy_c/dA along the straight line from A(b) to A(x) in the layer's space,
    summed over channels (B, 1, *s) (Captum's `LayerIntegratedGradients`); the layer map is upsampled to the
    input size and multiplied by |s| / |spatial| (its number of positions over the input's). Each part adds up
    to f_c(x) - f_c(b) up to its quadrature delta (the layer's, exactly so when nothing bypasses the layer),
    and so does their blend:

        EG = (1 - layer_weight) * IG_input + layer_weight * upsample(IG_layer) * |s| / |spatial|.

    This follows the review's description of EG ("extends IG by enriching input-level attribution map with
    high-level attribution maps"); the paper's exact weighting was not available here. Cost: the input path,
    plus n_steps rows per image for the layer's path.

    Args: as `IntegratedGradients`, plus `layer` (module or dotted path, a card's `target_layer`) and
    `layer_weight` in [0, 1]. `explain(x (B, C, *spatial), target (B,)) -> (B, 1, *spatial)`; afterwards
    `last_delta` (B,) is the input IG's delta, `last_layer_map` (B, 1, *s) the raw layer map and
    `last_layer_delta` (B,) its delta sum(IG_layer) - (f_c(x) - f_c(b)).
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
        self.last_layer_delta: torch.Tensor | None = None

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
        result, self.last_layer_map = self.from_integral(self.model, self.layer, x, target, attribution, integral,
                                                         alphas=ig.alphas, weights=ig.weights,
                                                         layer_weight=self.layer_weight, max_rows=ig.max_rows)
        self.last_layer_delta = self.last_layer_map.flatten(1).sum(1) - integral.delta_target
        return result

    @staticmethod
    def from_integral(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor,
                      input_ig: torch.Tensor, integral: PathIntegral, *, alphas: list[float], weights: list[float],
                      layer_weight: float, max_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """EG (B, 1, *spatial) and the raw layer map (B, 1, *s) from the input IG (B, C, *spatial) and an input
        path integral taken with the layer recorded (for its activations at x and at the baseline); the
        layer's own path runs here."""
        if integral.layer_at_x is None or integral.layer_at_baseline is None:
            raise ValueError("expressive gradients need a path integral with the layer's activations")
        layer_grad = layer_path_gradient(model, layer, x, target, integral.layer_at_x, integral.layer_at_baseline,
                                         alphas, weights, max_rows=max_rows)
        layer_map = ((integral.layer_at_x - integral.layer_at_baseline) * layer_grad).sum(1, keepdim=True)
        spatial = list(input_ig.shape[2:])
        scale = math.prod(layer_map.shape[2:]) / math.prod(spatial)
        enriched = upsample(layer_map, spatial) * scale
        return (1 - layer_weight) * input_ig.sum(1, keepdim=True) + layer_weight * enriched, layer_map
