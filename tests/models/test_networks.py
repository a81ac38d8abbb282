from __future__ import annotations

import pytest
import torch
from torch import nn

from models.networks import build_network

PARAMS = {"growth_rate": 4, "block_layers": [2, 3], "init_features": 8, "num_classes": 5}


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
    with pytest.raises(ValueError, match="unknown network 'resnet'"):
        build_network("resnet")
    with pytest.raises(ValueError, match="cannot be built"):
        build_network("densenet", depth=3)
    with pytest.raises(ValueError, match="spatial_dims"):
        build_network("densenet", spatial_dims=4)
