"""Averages of a gradient method over noisy copies of the input.

- `SmoothGrad`: Smilkov et al., "SmoothGrad: removing noise by adding noise", arXiv:1706.03825, 2017.
- `VarGrad`: Adebayo et al., "Local Explanation Methods for Deep Neural Networks Lack Sensitivity to
  Parameter Values", ICLR workshop 2018 (arXiv:1810.03307): the variance instead of the mean.

Noise: Gaussian with standard deviation `noise_level` x (max - min) of each row (Smilkov's sigma / range),
drawn from a `torch.Generator` seeded by `seed` on every call, so a call is repeatable. Tests and bundles
may pass the noise themselves (`explain_channels(x, target, noise=...)`).
"""

from __future__ import annotations

import torch
from torch import nn

from models.explain.base import ChannelExplainer
from models.explain.batching import chunks, rows_per_batch


def base_method(model: nn.Module, base: str | ChannelExplainer) -> ChannelExplainer:
    """The explainer to smooth: an instance, or a registered name of an input-level method."""
    if isinstance(base, ChannelExplainer):
        return base
    from models.explain.registry import explainer_class  # late: the registry imports every method lazily

    cls = explainer_class(base)
    if not issubclass(cls, ChannelExplainer):
        raise ValueError(f"{base!r} gives no per-channel input map: it cannot be smoothed")
    return cls(model)


def draw_noise(x: torch.Tensor, n_samples: int, noise_level: float, seed: int) -> torch.Tensor:
    """(B, n_samples, C, *spatial) Gaussian noise, sigma = noise_level * (max - min) of each row of x."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn((x.shape[0], n_samples, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    flat = x.detach().flatten(1)
    sigma = noise_level * (flat.max(1).values - flat.min(1).values)
    return noise * sigma.view(-1, *([1] * (noise.dim() - 1)))


def noisy_moments(method: ChannelExplainer, x: torch.Tensor, target: torch.Tensor, noise: torch.Tensor, *,
                  max_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and mean of squares over samples of `method`'s maps at x + noise: noise (B, n, C, *spatial) ->
    two (B, C, *spatial). Rows are image-major (image i, sample j at i * n + j), as in Captum's NoiseTunnel,
    and go through the network in memory-bounded batches."""
    b, n = noise.shape[:2]
    # A path method (IG) sends n_steps rows per noisy row.
    size = max(1, rows_per_batch(method.model, x[:1], max_rows=max_rows, rows_needed=b * n)
               // getattr(method, "n_steps", 1))
    flat_noise = noise.reshape(b * n, *x.shape[1:])
    total, total_sq = torch.zeros_like(x), torch.zeros_like(x)
    for part in chunks(b * n, size):
        image = torch.arange(part.start, part.stop, device=x.device) // n
        maps = method.explain_channels(x.detach()[image] + flat_noise[part], target[image])
        total.index_add_(0, image, maps)
        total_sq.index_add_(0, image, maps * maps)
    return total / n, total_sq / n


class SmoothGrad(ChannelExplainer):
    """SmoothGrad (Smilkov et al. 2017): the mean of a method's maps over n noisy copies of the input.

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K).
        base: the method smoothed: a registered name ("gradient", "saliency", "input_x_gradient",
            "guided_backprop", "integrated_gradients", ...) or a `ChannelExplainer`.
        n_samples: noisy copies per row. noise_level: sigma as a fraction of each row's value range.
        seed: seeds the noise generator on each call. max_rows: cap on rows per batch.

    `explain_channels(x (B, C, *spatial), target (B,) long, noise=None) -> (B, C, *spatial)`; `noise`
    (B, n_samples, C, *spatial) replaces the drawn noise. Equal to Captum's `NoiseTunnel(...,
    nt_type="smoothgrad")` given the same noise.
    """

    name = "smoothgrad"

    def __init__(self, model: nn.Module, base: str | ChannelExplainer = "gradient", *, n_samples: int = 25,
                 noise_level: float = 0.15, seed: int = 0, max_rows: int | None = None) -> None:
        super().__init__(model)
        self.method = base_method(model, base)
        self.n_samples, self.noise_level, self.seed, self.max_rows = n_samples, noise_level, seed, max_rows

    def draw_noise(self, x: torch.Tensor) -> torch.Tensor:
        """The noise of a call on x: (B, n_samples, C, *spatial)."""
        return draw_noise(x, self.n_samples, self.noise_level, self.seed)

    def explain_channels(self, x: torch.Tensor, target: torch.Tensor,
                         noise: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, target)
        noise = self.draw_noise(x) if noise is None else noise
        mean, mean_sq = noisy_moments(self.method, x, target, noise, max_rows=self.max_rows)
        return self.reduce(mean, mean_sq)

    @staticmethod
    def reduce(mean: torch.Tensor, mean_sq: torch.Tensor) -> torch.Tensor:
        """The map from the samples' mean and mean of squares."""
        return mean


class VarGrad(SmoothGrad):
    """VarGrad (Adebayo et al. 2018): the variance, E[m^2] - E[m]^2, of a method's maps over noisy copies.
    Arguments and shapes as `SmoothGrad`. Equal to Captum's `NoiseTunnel(..., nt_type="vargrad")` given the
    same noise."""

    name = "vargrad"

    @staticmethod
    def reduce(mean: torch.Tensor, mean_sq: torch.Tensor) -> torch.Tensor:
        return mean_sq - mean * mean
