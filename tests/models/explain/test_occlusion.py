"""Occlusion: equality with Captum, exact values on a linear model, 3D, hooks."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from models.explain.occlusion import Occlusion, window_starts
from tests.models.explain.nets import NETS, random_input


@pytest.mark.parametrize(("window", "stride"), [(4, 3), (5, 2), (3, 3)])
def test_occlusion_equals_captum(window: int, stride: int) -> None:
    model = NETS["resnet"]()
    x, target = random_input(2, size=12), torch.tensor([1, 2])
    maps = Occlusion(model, window=window, stride=stride, baseline=0.1).explain(x, target)
    expected = CaptumOcclusion(model).attribute(
        x, target=target, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=0.1)
    assert maps.shape == (2, 1, 12, 12)
    assert torch.allclose(maps, expected[:, :1], rtol=1e-4, atol=1e-6)


def test_occlusion_of_a_linear_model_is_the_pixel_contribution() -> None:
    # Windows of one pixel: the drop is exactly sum_c w_c (x_c - baseline).
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    maps = Occlusion(model, window=1, stride=1).explain(x, torch.tensor([1]))
    expected = (model[1].weight[1].detach().view(2, 3, 3) * x[0]).sum(0)
    assert torch.allclose(maps[0, 0], expected)


def test_occlusion_3d_and_window_starts() -> None:
    assert window_starts(28, 6, 4) == [0, 4, 8, 12, 16, 20, 24]
    model = NETS["densenet"](spatial_dims=3)
    x = random_input(1, spatial_dims=3, size=8)
    maps = Occlusion(model, window=4, stride=4, max_rows=3).explain(x, torch.tensor([0]))
    assert maps.shape == (1, 1, 8, 8, 8)
    # 4x4x4 windows with stride 4 tile the volume: each block holds one value.
    assert torch.allclose(maps[0, 0, :4, :4, :4], maps[0, 0, 0, 0, 0].expand(4, 4, 4))
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
