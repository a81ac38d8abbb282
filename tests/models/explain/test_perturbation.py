"""Superpixels and the perturbation methods: Captum equality, efficiency, exact values on a linear model."""

from __future__ import annotations

import pytest
import torch
from captum.attr import FeatureAblation as CaptumFeatureAblation
from captum.attr import ShapleyValueSampling
from torch import nn

from models.explain.perturbation import FeatureAblation, KernelShap, Lime, ShapleySampling
from models.explain.superpixels import feature_masks, grid_segments, slic
from tests.models.explain.nets import NETS, random_input


def _values(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(K,) the value each feature of one row got (its pixels all hold it)."""
    k = int(mask.max()) + 1
    return torch.zeros(k, dtype=maps.dtype).index_reduce_(0, mask.flatten(), maps.flatten(), "mean",
                                                           include_self=False)


def _logit(model: nn.Module, x: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(model(x)[0, target])


def test_slic_and_grid_segments() -> None:
    grid = grid_segments([8, 8], 4)
    assert grid.unique().numel() == 4 and grid[0, 0] == grid[3, 3] != grid[0, 4]
    image = torch.zeros(1, 12, 12)
    image[:, :, 6:] = 5.0  # two flat halves: no segment straddles the edge
    labels = slic(image, 8)
    assert set(labels[:, :6].unique().tolist()).isdisjoint(labels[:, 6:].unique().tolist())
    assert labels.unique().tolist() == list(range(int(labels.max()) + 1))
    masks = feature_masks(random_input(2, spatial_dims=3, size=8), 8)
    assert masks.shape == (2, 1, 8, 8, 8) and masks.dtype == torch.long


def test_feature_ablation_equals_captum() -> None:
    model = NETS["resnet"]().double()
    x, target = random_input(2, size=12).double(), torch.tensor([1, 2])
    mask = feature_masks(x, 9)
    maps = FeatureAblation(model).explain_features(x, target, mask)
    expected = CaptumFeatureAblation(model).attribute(x, target=target, feature_mask=mask)
    assert torch.allclose(maps, expected[:, :1], atol=1e-12)


def test_shapley_sampling_equals_captum_with_the_same_draws_and_is_efficient() -> None:
    model = NETS["densenet"]().double()
    x, target = random_input(1, size=12).double(), torch.tensor([2])
    mask = feature_masks(x, 9)
    maps = ShapleySampling(model, n_permutations=4, seed=3).explain_features(x, target, mask)
    torch.manual_seed(3)
    expected = ShapleyValueSampling(model).attribute(x, target=target, feature_mask=mask, n_samples=4)
    assert float((maps - expected[:, :1]).norm() / expected.norm()) < 1e-6
    total = _values(maps[0, 0], mask[0, 0]).sum()
    assert abs(float(total) - (_logit(model, x, 2) - _logit(model, torch.zeros_like(x), 2))) < 1e-9


def test_kernel_shap_is_exact_with_all_coalitions_and_efficient_when_sampled() -> None:
    model = NETS["resnet"]().double()
    x, target = random_input(1, size=12).double(), torch.tensor([1])
    mask = feature_masks(x, 9)
    exact = _values(KernelShap(model, n_samples=600).explain_features(x, target, mask)[0, 0], mask[0, 0])
    sampled = _values(ShapleySampling(model, n_permutations=100).explain_features(x, target, mask)[0, 0], mask[0, 0])
    assert float((sampled - exact).norm() / exact.norm()) < 0.1  # Monte Carlo error of 100 orders
    drawn = _values(KernelShap(model, n_samples=120).explain_features(x, target, mask)[0, 0], mask[0, 0])
    gap = _logit(model, x, 1) - _logit(model, torch.zeros_like(x), 1)
    assert abs(float(exact.sum()) - gap) < 1e-9 and abs(float(drawn.sum()) - gap) < 1e-9
    assert float((drawn - exact).norm() / exact.norm()) < 0.3


@pytest.mark.parametrize("cls", [FeatureAblation, ShapleySampling, KernelShap, Lime])
def test_linear_model_values_are_exact(cls: type) -> None:
    # For f = w.x + b, every method's value of a feature is sum over its elements of w (x - baseline).
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).double()
    x, target = torch.randn(1, 2, 6, 6, dtype=torch.float64), torch.tensor([2])
    mask = grid_segments([6, 6], 4).view(1, 1, 6, 6)
    kwargs = {"alpha": 0.0, "n_samples": 64} if cls is Lime else {}
    maps = cls(model, baseline=0.5, **kwargs).explain_features(x, target, mask)
    contribution = (model[1].weight[2].detach().view(2, 6, 6) * (x[0] - 0.5)).sum(0)
    expected = torch.zeros(4, dtype=torch.float64).index_add_(0, mask.flatten(), contribution.flatten())
    assert torch.allclose(_values(maps[0, 0], mask[0, 0]), expected, atol=1e-8)


@pytest.mark.parametrize("cls", [FeatureAblation, ShapleySampling, KernelShap, Lime])
def test_methods_are_seeded_and_work_in_3d(cls: type) -> None:
    model = NETS["densenet"](spatial_dims=3)
    x, target = random_input(1, spatial_dims=3, size=8), torch.tensor([0])
    kwargs = {"n_permutations": 2} if cls is ShapleySampling else {"n_samples": 40} if cls in (KernelShap, Lime) else {}
    first = cls(model, n_segments=8, **kwargs).explain(x, target)
    assert first.shape == (1, 1, 8, 8, 8)
    assert torch.equal(first, cls(model, n_segments=8, **kwargs).explain(x, target))
