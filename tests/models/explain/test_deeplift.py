"""DeepLift and DeepLiftShap: completeness, equality with Captum, reused ReLUs, hooks released."""

from __future__ import annotations

import pytest
import torch
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import DeepLiftShap as CaptumDeepLiftShap
from torch import nn

from models.explain.deeplift import DeepLift, DeepLiftShap
from tests.models.explain.nets import NETS, random_input


def _logit(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, target.view(-1, 1))[:, 0]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class ReusedReluNet(nn.Module):
    """A residual block that calls one in-place ReLU module three times, and a max pool (Captum #378)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(6, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv0(x))
        h = self.relu(h + self.conv2(self.relu(self.conv1(h))))
        return self.fc(self.pool(h).mean(dim=(2, 3)))


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deeplift_is_complete_and_equals_captum(net: str, spatial_dims: int) -> None:
    model = NETS[net](spatial_dims=spatial_dims).double()
    x = random_input(3, spatial_dims=spatial_dims, size=10).double()
    baseline = 0.3 * random_input(3, spatial_dims=spatial_dims, size=10, seed=5).double()
    target = torch.tensor([0, 1, 3])
    maps = DeepLift(model, baseline=baseline).explain(x, target)
    assert maps.shape == (3, 1, *x.shape[2:])
    delta = _logit(model, x, target) - _logit(model, baseline, target)
    assert torch.allclose(maps.flatten(1).sum(1), delta, rtol=1e-4, atol=1e-10)
    expected = CaptumDeepLift(model).attribute(x, baselines=baseline, target=target).sum(1, keepdim=True)
    assert _rel(maps, expected) < 1e-4
    assert _hook_count(model) == 0


def test_deeplift_is_complete_with_a_reused_inplace_relu_and_max_pool() -> None:
    torch.manual_seed(0)
    model = ReusedReluNet().double().eval()
    x, target = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    maps = DeepLift(model).explain(x, target)
    delta = _logit(model, x, target) - _logit(model, torch.zeros_like(x), target)
    assert torch.allclose(maps.flatten(1).sum(1), delta, rtol=1e-4, atol=1e-10)
    assert model.relu.inplace and _hook_count(model) == 0


def test_deeplift_of_a_linear_model_is_weight_times_difference() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    maps = DeepLift(model, baseline=0.5).explain(x, torch.tensor([1, 0]))
    weights = model[1].weight.detach().view(2, 3, 2, 2)
    expected = torch.stack([weights[1] * (x[0] - 0.5), weights[0] * (x[1] - 0.5)]).sum(1, keepdim=True)
    assert torch.allclose(maps, expected)


@pytest.mark.parametrize("net", sorted(NETS))
def test_deeplift_shap_equals_captum_and_is_complete_on_average(net: str) -> None:
    model = NETS[net]().double()
    x, target = random_input(2, size=10).double(), torch.tensor([2, 0])
    baselines = torch.randn(4, 3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    maps = DeepLiftShap(model, baselines, batch_size=3).explain(x, target)
    expected = CaptumDeepLiftShap(model).attribute(x, baselines=baselines, target=target).sum(1, keepdim=True)
    assert _rel(maps, expected) < 1e-4
    mean_baseline = torch.stack([_logit(model, baselines, t.expand(4)).mean() for t in target])
    assert torch.allclose(maps.flatten(1).sum(1), _logit(model, x, target) - mean_baseline, rtol=1e-4)


def test_default_deeplift_shap_baselines_are_seeded() -> None:
    model = NETS["densenet"]()
    x, target = random_input(2, size=10), torch.tensor([0, 1])
    assert torch.equal(DeepLiftShap(model).explain(x, target), DeepLiftShap(model).explain(x, target))


def test_hooks_are_released_after_an_error() -> None:
    model = NETS["resnet"]()
    with pytest.raises(RuntimeError):
        DeepLift(model).explain(torch.randn(1, 5, 10, 10), torch.tensor([0]))  # wrong channel count
    assert _hook_count(model) == 0


def _max_pool_head(model: nn.Module, spatial_dims: int, size: int) -> nn.Module:
    """The net with its global average pool replaced by a global max pool: adaptive, or the equivalent window."""
    adaptive = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}[spatial_dims]
    window = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]
    model.head.pool = adaptive(1) if size == 0 else window(size)
    return model


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deeplift_is_complete_with_a_global_max_pool_head(spatial_dims: int) -> None:
    # AdaptiveMaxPool used to pass as linear: summation-to-delta was off by ~0.5 on such a head.
    model = _max_pool_head(NETS["resnet"](spatial_dims=spatial_dims).double(), spatial_dims, 0)
    x = random_input(3, spatial_dims=spatial_dims, size=10).double()
    baseline = 0.3 * random_input(3, spatial_dims=spatial_dims, size=10, seed=5).double()
    target = torch.tensor([0, 1, 3])
    maps = DeepLift(model, baseline=baseline).explain(x, target)
    delta = _logit(model, x, target) - _logit(model, baseline, target)
    assert torch.allclose(maps.flatten(1).sum(1), delta, rtol=1e-6, atol=1e-10)
    # The same head as a window over the whole 5 x 5 feature map (block2 halves 10) gives the same maps.
    windowed = _max_pool_head(NETS["resnet"](spatial_dims=spatial_dims).double(), spatial_dims, 5)
    assert _rel(maps, DeepLift(windowed, baseline=baseline).explain(x, target)) < 1e-10
    assert _hook_count(model) == 0


def test_deeplift_shap_is_complete_on_the_product_densenet_with_a_max_pool_head() -> None:
    from models.networks.densenet import DenseNet

    torch.manual_seed(0)
    model = DenseNet(num_classes=3, growth_rate=4, block_layers=(2, 2), init_features=8, pool="max").double().eval()
    assert any(isinstance(m, nn.AdaptiveMaxPool2d) for m in model.modules())
    x, target = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([2, 0])
    baselines = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    maps = DeepLiftShap(model, baselines).explain(x, target)
    mean_baseline = torch.stack([_logit(model, baselines, t.expand(3)).mean() for t in target])
    assert torch.allclose(maps.flatten(1).sum(1), _logit(model, x, target) - mean_baseline, rtol=1e-6, atol=1e-10)
