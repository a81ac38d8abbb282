"""LRP-epsilon and composite LRP: equality with Captum, conservation on dense and residual nets, 2D / 3D."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LRP
from torch import nn

from models.explain.lrp import LRPComposite, LRPEpsilon
from tests.models.explain.nets import NETS, random_input


class PlainConvNet(nn.Module):
    """Conv / ReLU / max pool / conv / ReLU / average pool / Linear, with biases: where Captum's LRP is right."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(6, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool1(self.relu1(self.conv1(x)))
        return self.fc(self.pool2(self.relu2(self.conv2(h))).flatten(1))


def _logit_minus_bias(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, target.view(-1, 1))[:, 0] - model.head.classifier.bias[target]


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def test_lrp_epsilon_equals_captum_on_a_plain_conv_net() -> None:
    torch.manual_seed(0)
    model = PlainConvNet().double().eval()
    x, target = torch.randn(3, 3, 12, 12, dtype=torch.float64), torch.tensor([0, 1, 3])
    expected = LRP(model).attribute(x, target=target).sum(1, keepdim=True)
    maps = LRPEpsilon(model, epsilon=1e-9).explain(x, target)
    assert float((maps - expected).norm() / expected.norm()) < 1e-6


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_lrp_epsilon_conserves_on_a_residual_net(spatial_dims: int) -> None:
    # Relevance sums to the logit minus the classifier's bias (the only bias); epsilon -> 0 makes it exact.
    model = NETS["resnet"](spatial_dims=spatial_dims).double()
    x, target = random_input(4, spatial_dims=spatial_dims, size=10).double(), torch.tensor([0, 1, 2, 3])
    expected = _logit_minus_bias(model, x, target)
    exact = LRPEpsilon(model, epsilon=1e-10, bn_rule="identity").explain(x, target).flatten(1).sum(1)
    assert torch.allclose(exact, expected, rtol=1e-4, atol=1e-8)
    assert _hook_count(model) == 0


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("cls", [LRPEpsilon, LRPComposite])
def test_lrp_conserves_within_tolerance(net: str, cls: type) -> None:
    # Leaks: biases (subtracted here), epsilon, batch-norm inputs that are exactly 0 (the relevance of the
    # BN shift there has nowhere to go: DenseNet's 1x1 bottleneck after an all-zero ReLU position), and for
    # z+ the outputs with no positive contribution. Measured against the total absolute relevance.
    model = NETS[net]().double()
    x, target = random_input(4, size=12).double(), torch.tensor([0, 1, 2, 3])
    maps = cls(model, bn_rule="identity").explain(x, target)
    leak = (maps.flatten(1).sum(1) - _logit_minus_bias(model, x, target)).abs()
    assert torch.all(leak <= 0.1 * maps.flatten(1).abs().sum(1))
    assert torch.isfinite(maps).all()


@pytest.mark.parametrize("cls", [LRPEpsilon, LRPComposite])
def test_default_batch_norm_rule_equals_gradient_times_input_in_the_epsilon_limit(cls: type) -> None:
    # With BN as a linear layer, LRP-0 on a bias-free ReLU net is gradient * input (shifts act as biases).
    model = NETS["resnet"]().double()
    x, target = random_input(2, size=10).double(), torch.tensor([0, 3])
    maps = LRPEpsilon(model, epsilon=1e-12).explain(x, target)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).gather(1, target.view(-1, 1)).sum(), xg)
    assert torch.allclose(maps, (grad * x).sum(1, keepdim=True), rtol=1e-6, atol=1e-9)
    assert torch.isfinite(cls(model).explain(x, target)).all()


def test_lrp_of_a_bias_free_linear_model_is_weight_times_input() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2, bias=False)).double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    maps = LRPEpsilon(model, epsilon=1e-12).explain(x, torch.tensor([1, 1]))
    expected = (model[1].weight[1].detach().view(3, 2, 2) * x).sum(1, keepdim=True)
    assert torch.allclose(maps, expected)


@pytest.mark.parametrize("first_rule", ["zb", "w2", "flat"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_composite_first_layer_rules_conserve_the_first_layer(first_rule: str, spatial_dims: int) -> None:
    # A single bias-free conv + sum: every first-layer rule passes the whole output relevance to the input.
    conv = [nn.Conv2d, nn.Conv3d][spatial_dims - 2](2, 1, 3, padding=1, bias=False)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(6**spatial_dims, 1, bias=False)).double()
    nn.init.constant_(model[2].weight, 1.0)
    x = torch.rand(2, 2, *[6] * spatial_dims, dtype=torch.float64)
    low, high = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    explainer = LRPComposite(model, epsilon=1e-12, first_rule=first_rule, low=low, high=high)
    maps = explainer.explain(x, torch.tensor([0, 0]))
    with torch.no_grad():
        assert torch.allclose(maps.flatten(1).sum(1), model(x)[:, 0], rtol=1e-6)


def test_composite_from_card_bounds_are_the_normalised_pixel_range() -> None:
    from types import SimpleNamespace

    card = SimpleNamespace(input=SimpleNamespace(mean=[0.5, 0.25], std=[0.5, 0.25]))
    explainer = LRPComposite.from_card(nn.Identity(), card)  # type: ignore[arg-type]
    assert torch.allclose(explainer.low, torch.tensor([-1.0, -1.0]))
    assert torch.allclose(explainer.high, torch.tensor([1.0, 3.0]))


def test_unknown_first_rule_is_refused() -> None:
    with pytest.raises(ValueError):
        LRPComposite(nn.Identity(), first_rule="gamma")
