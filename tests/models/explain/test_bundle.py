from __future__ import annotations

import pytest
import torch

from models.explain.bundle import DEFAULT_METHODS, BundleOptions, explain_bundle
from models.explain.cam import CAM, GradCAMPlusPlus
from models.explain.gradcam import GradCAM
from models.explain.gradient_shap import GradientShap
from models.explain.gradients import Gradient, InputXGradient, Saliency
from models.explain.guided import Deconvnet, GuidedBackprop, GuidedGradCAM
from models.explain.integrated_gradients import ExpressiveGradients, IntegratedGradients
from models.explain.noise_tunnel import SmoothGrad, VarGrad
from tests.models.explain.nets import NETS, no_hooks_left, random_input, relative_l2

TARGET = torch.tensor([0, 2, 3])


def _single(model, layer):
    return {
        "gradient": Gradient(model), "saliency": Saliency(model), "input_x_gradient": InputXGradient(model),
        "gradcam": GradCAM(model, layer), "gradcam_pp": GradCAMPlusPlus(model, layer), "cam": CAM(model, layer),
        "guided_backprop": GuidedBackprop(model), "deconvnet": Deconvnet(model),
        "guided_gradcam": GuidedGradCAM(model, layer),
        "integrated_gradients": IntegratedGradients(model, n_steps=8, max_rows=7),
        "expressive_gradients": ExpressiveGradients(model, layer, n_steps=8, max_rows=7),
        "smoothgrad": SmoothGrad(model, n_samples=4, max_rows=7), "vargrad": VarGrad(model, n_samples=4, max_rows=7),
        "gradient_shap": GradientShap(model, n_samples=4, max_rows=7),
    }


@pytest.mark.parametrize("net", sorted(NETS))
def test_every_map_equals_its_single_method_class(net):
    model, x = NETS[net](), random_input(3)
    singles = _single(model, model.target_layer)
    options = BundleOptions(target_layer=model.target_layer, n_steps=8, n_samples=4, shap_samples=4, max_rows=7)
    bundle = explain_bundle(model, x, TARGET, list(singles), options)
    for name, explainer in singles.items():
        assert bundle[name].shape == (3, 1, 12, 12)
        assert relative_l2(bundle[name], explainer.explain(x, TARGET)) < 1e-5, name
    assert torch.allclose(bundle.deltas["integrated_gradients"], singles["integrated_gradients"].last_delta)
    assert set(bundle.seconds) == set(singles) | {"total"}
    assert no_hooks_left(model) and all(p.grad is None for p in model.parameters())


def test_default_bundle_in_3d_and_from_a_card(make_model_folder):
    from models.card import load_card
    from models.registry import load_model

    card = load_card(make_model_folder())
    model = load_model(card)
    bundle = explain_bundle(model, random_input(2, size=16), torch.tensor([0, 2]), ["gradcam", "saliency"], card)
    assert torch.allclose(bundle["gradcam"], GradCAM.from_card(model, card).explain(random_input(2, size=16),
                                                                                     torch.tensor([0, 2])))
    model3d = NETS["resnet"](spatial_dims=3)
    options = BundleOptions(target_layer=model3d.target_layer, n_steps=4)
    x = random_input(2, spatial_dims=3, size=8)
    bundle = explain_bundle(model3d, x, TARGET[:2], DEFAULT_METHODS, options)
    assert all(bundle[name].shape == (2, 1, 8, 8, 8) for name in DEFAULT_METHODS)


def test_only_layer_methods_and_errors():
    model, x = NETS["densenet"](), random_input(1)
    options = BundleOptions(target_layer=model.target_layer)
    bundle = explain_bundle(model, x, TARGET[:1], ["cam", "gradcam_pp"], options)
    assert set(bundle) == {"cam", "gradcam_pp"}
    with pytest.raises(ValueError, match="unknown explainers"):
        explain_bundle(model, x, TARGET[:1], ["gradient", "nope"], options)
    with pytest.raises(ValueError, match="target_layer"):
        explain_bundle(model, x, TARGET[:1], ["gradcam"], BundleOptions())
