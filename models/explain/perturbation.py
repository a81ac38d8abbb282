"""Perturbation methods over superpixels (2D) or supervoxels (3D): forward passes only, seeded.

Each method gives every feature (a segment of `models.explain.superpixels`, all channels together) one
value, and the map puts that value on each pixel of the feature (as Captum does on each element; Captum's
channel sum is C times this map). A feature is "absent" when its pixels take the baseline value (0: the
dataset mean in normalised space). Rows are explained independently, each with its own segmentation.

- FeatureAblation: f(x) - f(x without feature k).
- ShapleySampling: Castro, Gómez and Tejada, "Polynomial calculation of the Shapley value based on
  sampling", Computers & Operations Research 2009; Štrumbelj and Kononenko, "An Efficient Explanation of
  Individual Classifications using Game Theory", JMLR 2010.
- KernelShap: Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017.
- Lime: Ribeiro, Singh and Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
  Classifier", KDD 2016.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from models.card import ModelCard
from models.explain import batching
from models.explain.base import Explainer
from models.explain.superpixels import feature_masks


def _segments_for(card: ModelCard) -> int:
    # About one segment per 4x4 pixels (4x4x4 voxels), at most 100: forwards grow with the segment count.
    cells = math.prod(max(1, s // 4) for s in card.input.size)
    return int(min(100, max(8, cells)))


class _FeatureMethod(Explainer):
    """Shared plumbing: segmentation, coalition inputs, batched target scores.

    Args:
        model: a classifier in eval mode, (B, C, *spatial) -> (B, K) logits.
        n_segments: about how many superpixels / supervoxels per image.
        segmentation: "slic" or "grid".
        baseline: the value of absent features, in normalised space.
        seed: seeds the random draws (a torch.Generator per `explain` call, so calls repeat exactly).
        max_rows: cap on perturbed inputs per forward (memory-bounded by models.explain.batching).
    """

    def __init__(self, model: nn.Module, *, n_segments: int = 50, segmentation: str = "slic",
                 baseline: float = 0.0, seed: int = 0, max_rows: int = 64) -> None:
        super().__init__(model)
        self.n_segments, self.segmentation, self.baseline = n_segments, segmentation, baseline
        self.seed, self.max_rows = seed, max_rows

    @classmethod
    def from_card(cls, model: nn.Module, card: ModelCard) -> Explainer:
        return cls(model, n_segments=_segments_for(card))

    def explain(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, *spatial); target (B,) long. Returns: (B, 1, *spatial), each feature's value on
        its pixels."""
        self._check(x, target)
        return self.explain_features(x, target, feature_masks(x, self.n_segments, self.segmentation))

    def explain_features(self, x: torch.Tensor, target: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        """`explain` with given features: `feature_mask` (B, 1, *spatial) long in [0, K_b) per row."""
        self._check(x, target)
        generator = torch.Generator().manual_seed(self.seed)
        self._batch = batching.rows_per_batch(self.model, x[:1], backward=False, max_rows=self.max_rows)
        maps = []
        for row in range(x.shape[0]):
            mask = feature_mask[row, 0].to(x.device)
            values = self._feature_values(x[row], target[row], mask, int(mask.max()) + 1, generator)
            maps.append(values[mask])
        return torch.stack(maps).unsqueeze(1)

    def _feature_values(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, k: int,
                        generator: torch.Generator) -> torch.Tensor:
        """(k,) value of each feature of one row x (C, *s)."""
        raise NotImplementedError

    def _scores(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(N,) target logits of x with only the features where `present` (N, k) bool is True."""
        baseline = torch.as_tensor(self.baseline).to(x)
        out = []
        with torch.no_grad():
            for part in batching.chunks(present.shape[0], self._batch):
                keep = present[part][:, mask].unsqueeze(1)  # (n, 1, *s)
                logits = self.model(torch.where(keep, x, baseline))
                out.append(logits[:, target])
        return torch.cat(out)


class FeatureAblation(_FeatureMethod):
    """Feature ablation over superpixels: value of feature k = f(x) - f(x with k at the baseline).

    Equal to Captum's `FeatureAblation` with the same feature mask and baseline (at any one channel).
    Args: see `_FeatureMethod`.
    """

    name = "feature_ablation"

    def _feature_values(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, k: int,
                        generator: torch.Generator) -> torch.Tensor:
        present = ~torch.eye(k + 1, k, dtype=torch.bool, device=x.device)  # row k: all present
        scores = self._scores(x, target, mask, present)
        return scores[k] - scores[:k]


class ShapleySampling(_FeatureMethod):
    """Shapley values by sampling permutations (Castro et al. 2009; Štrumbelj and Kononenko 2010).

    For each of `n_permutations` random orders, features are switched from baseline to x one at a time and
    each gets its marginal change of the target logit; values are averaged over orders. Efficiency holds
    exactly for every order: sum of values = f(x) - f(baseline). The permutations are
    `torch.randperm(k, generator=Generator().manual_seed(seed))` drawn in turn, the draws Captum's
    `ShapleyValueSampling` makes from the global generator after `torch.manual_seed(seed)` (one row).

    Args: see `_FeatureMethod`; n_permutations: orders sampled (k + 1 forwards each, less the shared start).
    """

    name = "shapley_sampling"

    def __init__(self, model: nn.Module, *, n_permutations: int = 25, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_permutations = n_permutations

    def _feature_values(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, k: int,
                        generator: torch.Generator) -> torch.Tensor:
        steps = torch.tril(torch.ones(k, k, dtype=torch.bool, device=x.device))  # step i: first i + 1 on
        empty = self._scores(x, target, mask, torch.zeros(1, k, dtype=torch.bool, device=x.device))
        values = torch.zeros(k, dtype=x.dtype, device=x.device)
        for _ in range(self.n_permutations):
            order = torch.randperm(k, generator=generator).to(x.device)
            present = torch.zeros(k, k, dtype=torch.bool, device=x.device)
            present[:, order] = steps
            scores = torch.cat([empty, self._scores(x, target, mask, present)])
            values[order] += scores[1:] - scores[:-1]
        return values / self.n_permutations


def _shapley_kernel_sizes(k: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) coalition sizes in [1, k-1] drawn with probability proportional to (k-1) / (s (k - s))."""
    sizes = torch.arange(1, k)
    weights = (k - 1) / (sizes * (k - sizes)).double()
    return sizes[torch.multinomial(weights, n, replacement=True, generator=generator)]


def _all_coalitions(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every coalition but the empty and the full one (k, k) bool and its Shapley kernel weight."""
    codes = torch.arange(1, 2**k - 1)
    present = (codes.unsqueeze(1) >> torch.arange(k)) & 1 == 1
    sizes = present.sum(1)
    weights = (k - 1) / (torch.tensor([math.comb(k, int(s)) for s in sizes]) * sizes * (k - sizes)).double()
    return present, weights


class KernelShap(_FeatureMethod):
    """Kernel SHAP over superpixels (Lundberg and Lee, NeurIPS 2017).

    Coalitions z of features are weighted by the Shapley kernel; the values solve the weighted least-squares
    fit of f(z) with the constraints value_0 = f(baseline) and sum of values = f(x) - f(baseline) (so
    efficiency holds exactly). With 2^k - 2 <= n_samples every coalition is used with its kernel weight,
    which gives the exact Shapley values; otherwise n_samples coalitions are drawn from the kernel (size s
    with probability proportional to (k-1) / (s (k-s)), then a uniform subset) with equal weights.

    Args: see `_FeatureMethod`; n_samples: coalitions evaluated (forwards, plus 2).
    """

    name = "kernel_shap"

    def __init__(self, model: nn.Module, *, n_samples: int = 200, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_samples = n_samples

    def _feature_values(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, k: int,
                        generator: torch.Generator) -> torch.Tensor:
        ends = self._scores(x, target, mask, torch.tensor([[False] * k, [True] * k], device=x.device))
        if k == 1:
            return (ends[1] - ends[0]).view(1)
        if 2**k - 2 <= self.n_samples:
            present, weights = _all_coalitions(k)
        else:
            sizes = _shapley_kernel_sizes(k, self.n_samples, generator)
            ranks = torch.rand(self.n_samples, k, generator=generator).argsort(dim=1).argsort(dim=1)
            present, weights = ranks < sizes.unsqueeze(1), torch.ones(self.n_samples, dtype=torch.float64)
        scores = self._scores(x, target, mask, present.to(x.device)).double().cpu()
        # Substitute the last value by total - sum(others): an unconstrained fit of k - 1 values.
        z, total = present.double(), float(ends[1] - ends[0])
        design = z[:, :-1] - z[:, -1:]
        response = scores - float(ends[0]) - z[:, -1] * total
        root = weights.sqrt().unsqueeze(1)
        head = torch.linalg.lstsq(design * root, (response * root.squeeze(1)).unsqueeze(1)).solution.squeeze(1)
        return torch.cat([head, (total - head.sum()).view(1)]).to(x)


class Lime(_FeatureMethod):
    """LIME over superpixels (Ribeiro et al., KDD 2016).

    `n_samples` coalitions (the first: all features present; then each feature present with probability
    1/2) are weighted by exp(-d^2 / width^2), d the cosine distance between the coalition and the full one
    in the interpretable space; the values are the coefficients of a weighted ridge regression (intercept
    not penalised) of the target logit on the coalitions, solved with torch.linalg.lstsq.

    Args: see `_FeatureMethod`; n_samples: coalitions evaluated; kernel_width: of the exponential kernel
        (0.25, lime's image default); alpha: ridge penalty (1.0, lime's Ridge default; 0: least squares).
    """

    name = "lime"

    def __init__(self, model: nn.Module, *, n_samples: int = 200, kernel_width: float = 0.25, alpha: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_samples, self.kernel_width, self.alpha = n_samples, kernel_width, alpha

    def _feature_values(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, k: int,
                        generator: torch.Generator) -> torch.Tensor:
        draws = torch.rand(self.n_samples - 1, k, generator=generator) < 0.5
        present = torch.cat([torch.ones(1, k, dtype=torch.bool), draws])
        scores = self._scores(x, target, mask, present.to(x.device)).double().cpu()
        z = present.double()
        cosine = z.sum(1) / (math.sqrt(k) * z.sum(1).sqrt().clamp(min=1e-12))
        weights = torch.exp(-((1.0 - cosine) ** 2) / self.kernel_width**2)
        design = torch.cat([torch.ones(self.n_samples, 1, dtype=torch.float64), z], dim=1) * weights.sqrt().unsqueeze(1)
        response = scores * weights.sqrt()
        # Ridge as least squares on rows appended below: sqrt(alpha) * I for the coefficients, not the intercept.
        penalty = torch.cat([torch.zeros(k, 1, dtype=torch.float64), torch.eye(k, dtype=torch.float64)], 1)
        design = torch.cat([design, math.sqrt(self.alpha) * penalty])
        response = torch.cat([response, torch.zeros(k, dtype=torch.float64)])
        solution = torch.linalg.lstsq(design, response.unsqueeze(1)).solution.squeeze(1)
        return solution[1:].to(x)
