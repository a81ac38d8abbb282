from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam

from models.explain.gradcam import GradCAM
from models.explain.registry import get_explainer
from models.networks import build_network

PARAMS = {"growth_rate": 4, "block_layers": [2, 2], "init_features": 8, "num_classes": 4}


def _model(dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_network("densenet", spatial_dims=dims, in_channels=3, **PARAMS)
    # Non-trivial batch-norm statistics, so eval mode is not the identity.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, *([12] * dims)))
    return model.eval()


def _relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("dims", "mode"), [(2, "bilinear"), (3, "trilinear")])
@pytest.mark.parametrize("layer", ["features.relu_final", "features.block1"])
def test_equals_captum(dims, mode, layer):
    model = _model(dims)
    x = torch.randn(3, 3, *([12] * dims))
    target = torch.tensor([0, 2, 3])
    ours = GradCAM(model, layer).explain(x, target)
    assert not ours.requires_grad
    captum_layer = LayerGradCam(model, model.get_submodule(layer))
    raw = captum_layer.attribute(x, target=target, relu_attributions=True)
    reference = LayerAttribution.interpolate(raw, tuple(x.shape[2:]), interpolate_mode=mode).detach()
    assert ours.shape == (3, 1, *x.shape[2:])
    assert reference.norm() > 0
    assert _relative_l2(ours, reference) < 1e-4


def test_3d_map_shape_and_sign():
    model = _model(3)
    x = torch.randn(2, 3, 8, 12, 10)
    cam = GradCAM(model, "features.relu_final").explain(x, torch.tensor([1, 1]))
    assert cam.shape == (2, 1, 8, 12, 10) and (cam >= 0).all()


def test_hooks_released_after_explain_and_after_an_exception():
    model = _model(2)
    explainer = GradCAM(model, "features.relu_final")
    explainer.explain(torch.randn(1, 3, 12, 12), torch.tensor([0]))
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    with pytest.raises((IndexError, RuntimeError)):
        explainer.explain(torch.randn(1, 3, 12, 12), torch.tensor([99]))  # no class 99: gather fails
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_bad_arguments():
    explainer = GradCAM(_model(2), "features.relu_final")
    with pytest.raises(ValueError, match="target must be"):
        explainer.explain(torch.randn(2, 3, 12, 12), torch.tensor([0]))
    with pytest.raises(ValueError, match="no layer"):
        GradCAM(_model(2), "features.nope")


def test_registry_uses_the_cards_target_layer(make_model_folder):
    from models.card import load_card
    from models.registry import load_model

    card = load_card(make_model_folder())
    model = load_model(card)
    explainer = get_explainer("gradcam", model, card)
    assert explainer.name == "gradcam" and explainer.layer is model.features.relu_final
    with pytest.raises(ValueError, match="unknown explainer"):
        get_explainer("not_a_method", model, card)
