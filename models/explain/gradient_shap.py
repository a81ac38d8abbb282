"""GradientSHAP / expected gradients: Lundberg & Lee, "A Unified Approach to Interpreting Model
Predictions", NeurIPS 2017, and Erion et al., "Improving performance of deep learning models with axiomatic
attribution priors and expected gradients", Nature Machine Intelligence 2021 (arXiv:1906.10670).

E over baselines b ~ D and a ~ U(0, 1) of (x - b) * dy_c/dx at b + a (x - b): integrated gradients
averaged over a distribution of baselines, estimated with n_samples random (baseline, a) draws per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.explain.base import ChannelExplainer, gradient_pass
from models.explain.batching import chunks, rows_per_batch
from models.explain.integrated_gradients import gaussian_blur


@dataclass
class Draws:
    """Random draws of one call: `index` (B, n) long into each row's baselines, `alpha` (B, n) in [0, 1)."""

    index: torch.Tensor
    alpha: torch.Tensor


def default_baselines(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Three baselines per row, (B, 3, C, *spatial): zeros, x blurred (sigma 1/20 of the largest spatial
    size), and Gaussian noise with x's mean and standard deviation (per row)."""
    x = x.detach()
    flat = x.flatten(1)
    shape = (-1,) + (1,) * (x.dim() - 1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noise = flat.mean(1).view(shape) + flat.std(1).view(shape) * noise
    return torch.stack([torch.zeros_like(x), gaussian_blur(x, max(x.shape[2:]) / 20), noise], dim=1)


class GradientShap(ChannelExplainer):
    """GradientSHAP (expected gradients): mean over n_samples draws of (x - b) * gradient at b + a (x - b).

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K).
        baselines: None for `default_baselines` (per row), or a tensor (N_b, C, *spatial) shared by all rows
            (e.g. training images), as Captum takes them.
        n_samples: draws per row. seed: seeds a `torch.Generator` on each call (repeatable).
        max_rows: cap on rows per batch.

    `explain_channels(x (B, C, *spatial), target (B,) long, draws=None) -> (B, C, *spatial)`; `draws`
    (a `Draws`) replaces the random draws. Equal to Captum's `GradientShap` given the same draws.
    """

    name = "gradient_shap"

    def __init__(self, model: nn.Module, baselines: torch.Tensor | None = None, *, n_samples: int = 20,
                 seed: int = 0, max_rows: int | None = None) -> None:
        super().__init__(model)
        self.baselines, self.n_samples, self.seed, self.max_rows = baselines, n_samples, seed, max_rows

    def baselines_for(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each row's baselines, (B, N_b, C, *spatial)."""
        if self.baselines is None:
            return default_baselines(x, generator)
        shared = self.baselines.to(x.device, x.dtype)
        return shared.unsqueeze(0).expand(x.shape[0], *shared.shape)

    def draw(self, x: torch.Tensor, n_baselines: int, generator: torch.Generator) -> Draws:
        b = x.shape[0]
        index = torch.randint(n_baselines, (b, self.n_samples), generator=generator, device=x.device)
        alpha = torch.rand((b, self.n_samples), generator=generator, device=x.device, dtype=x.dtype)
        return Draws(index=index, alpha=alpha)

    def explain_channels(self, x: torch.Tensor, target: torch.Tensor, draws: Draws | None = None) -> torch.Tensor:
        self._check(x, target)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        baselines = self.baselines_for(x, generator)
        draws = self.draw(x, baselines.shape[1], generator) if draws is None else draws
        return expected_gradients(self.model, x, target, baselines, draws, max_rows=self.max_rows)


def expected_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor,
                       draws: Draws, *, max_rows: int | None = None) -> torch.Tensor:
    """Mean over draws of (x - b) * gradient at a x + (1 - a) b: x (B, C, *spatial), baselines
    (B, N_b, C, *spatial) -> (B, C, *spatial). Rows image-major (as Captum), in memory-bounded batches."""
    b, n = draws.index.shape
    x = x.detach()
    size = rows_per_batch(model, x[:1], max_rows=max_rows, rows_needed=b * n)
    total = torch.zeros_like(x)
    shape = (-1,) + (1,) * (x.dim() - 1)
    for part in chunks(b * n, size):
        rows = torch.arange(part.start, part.stop, device=x.device)
        image = rows // n
        chosen = baselines[image, draws.index.flatten()[part]]
        alpha = draws.alpha.flatten()[part].view(shape)
        grad = gradient_pass(model, alpha * x[image] + (1 - alpha) * chosen, target[image]).input_grad
        assert grad is not None
        total.index_add_(0, image, (x[image] - chosen) * grad)
    return total / n
