from __future__ import annotations

import pytest
import torch
from torch import nn

from models.networks import build_network

PARAMS = {"growth_rate": 4, "block_layers": [2, 3], "init_features": 8, "num_classes": 5}
RESNET = {"widths": [8, 16, 24], "blocks": [1, 2, 1], "num_classes": 5}
BOTH = [("densenet", PARAMS), ("resnet", RESNET)]


@pytest.mark.parametrize(("dims", "spatial"), [(2, (28, 28)), (3, (12, 16, 16))])
def test_forward_shape(dims, spatial):
    model = build_network("densenet", spatial_dims=dims, in_channels=2, **PARAMS).eval()
    assert model(torch.randn(3, 2, *spatial)).shape == (3, 5)
    assert model.features(torch.randn(1, 2, *spatial)).dim() == 2 + dims


@pytest.mark.parametrize("dims", [2, 3])
def test_each_relu_module_runs_once_per_forward(dims):
    model = build_network("densenet", spatial_dims=dims, in_channels=1, **PARAMS).eval()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len({id(m) for m in relus}) == len(relus) == len([m for _, m in model.named_modules() if m in relus])
    calls = {id(m): 0 for m in relus}
    handles = [m.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls[id(mod)] + 1)) for m in relus]
    try:
        model(torch.randn(2, 1, *([8] * dims)))
    finally:
        for handle in handles:
            handle.remove()
    assert set(calls.values()) == {1}
    # 2 per dense layer, 1 per transition, 1 final.
    assert len(relus) == 2 * 5 + 1 + 1


def test_dropout_only_in_head():
    model = build_network("densenet", **PARAMS)
    dropouts = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert dropouts == ["head.dropout"]


def test_unknown_network_and_bad_params():
    with pytest.raises(ValueError, match="unknown network 'vgg'"):
        build_network("vgg")
    with pytest.raises(ValueError, match="cannot be built"):
        build_network("densenet", depth=3)
    with pytest.raises(ValueError, match="spatial_dims"):
        build_network("densenet", spatial_dims=4)


@pytest.mark.parametrize(("name", "params"), BOTH)
@pytest.mark.parametrize(("dims", "spatial"), [(2, (32, 32)), (3, (8, 16, 16))])
@pytest.mark.parametrize("pool", ["avg", "max"])
def test_both_networks_build_in_2d_and_3d_with_a_features_head_split(name, params, dims, spatial, pool):
    model = build_network(name, spatial_dims=dims, in_channels=2, pool=pool, **params).eval()
    x = torch.randn(3, 2, *spatial)
    features = model.features(x)
    assert features.dim() == 2 + dims and features.shape[1] == model.num_features
    assert torch.equal(model.head(features), model(x)) and model(x).shape == (3, 5)
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Dropout)] == ["head.dropout"]


@pytest.mark.parametrize("dims", [2, 3])
def test_resnet_relu_modules_run_once_each(dims):
    model = build_network("resnet", spatial_dims=dims, in_channels=1, stem_stride=2, stem_pool=True, **RESNET).eval()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    calls = {id(m): 0 for m in relus}
    handles = [m.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls[id(mod)] + 1)) for m in relus]
    try:
        model(torch.randn(2, 1, *([16] * dims)))
    finally:
        for handle in handles:
            handle.remove()
    assert set(calls.values()) == {1}
    assert len(relus) == 1 + 2 * 4  # stem, then relu1 and relu_out per block
    assert dict(model.named_modules())["features.stage3"] is not None


def test_resnet_bad_params():
    with pytest.raises(ValueError, match="one entry per stage"):
        build_network("resnet", widths=[8, 16], blocks=[1])
    with pytest.raises(ValueError, match="pool must be"):
        build_network("resnet", pool="median")
