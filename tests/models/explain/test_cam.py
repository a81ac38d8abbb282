from __future__ import annotations

import pytest
import torch
from torch import nn

from models.explain.base import record_output, upsample
from models.explain.cam import CAM, GradCAMPlusPlus
from tests.models.explain.nets import NETS, no_hooks_left, random_input, relative_l2, tiny_densenet

TARGET = torch.tensor([0, 2, 3])


@pytest.mark.parametrize("net", sorted(NETS))
def test_cam_mean_plus_bias_is_the_logit(net):
    # Known value: on the layer's own grid the CAM's spatial mean plus the class bias is the logit.
    model, x = NETS[net](), random_input(3)
    layer = model.get_submodule(model.target_layer)
    with record_output(layer) as record:
        logits = model(x).detach()
    small = CAM(model, model.target_layer).from_layer(record.output, logits, TARGET, model.head.classifier,
                                                      list(record.output.shape[2:]))
    bias = model.head.classifier.bias.detach()[TARGET]
    expected = logits.gather(1, TARGET.view(-1, 1)).squeeze(1)
    assert torch.allclose(small.flatten(1).mean(1) + bias, expected, atol=1e-5)
    assert CAM(model, model.target_layer).explain(x, TARGET).shape == (3, 1, 12, 12)


def test_cam_refuses_a_net_that_does_not_fit():
    model = tiny_densenet()
    with pytest.raises(ValueError, match="global average"):
        CAM(model, "features.block1").explain(random_input(1), TARGET[:1])
    with pytest.raises(ValueError, match="no nn.Linear"):
        CAM(nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()), "0")
    assert no_hooks_left(model)


def _gradcam_pp_by_the_paper(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Chattopadhay et al. 2018, eq. 19 and 10, literally: S = exp(y), one row, loops over channels and
    positions. Returns the (1, 1, *spatial) map including the factor exp(y)."""
    with record_output(layer) as record:
        y = model(x)[0, target]
    activations = record.output[0]
    (grad,) = torch.autograd.grad(y, record.output)
    grad, activations, score = grad[0].double(), activations.detach().double(), torch.exp(y.detach().double())
    first, second, third = score * grad, score * grad**2, score * grad**3
    cam = torch.zeros(activations.shape[1:], dtype=torch.float64)
    for k in range(activations.shape[0]):
        total = activations[k].sum()
        weight = 0.0
        for position in torch.cartesian_prod(*[torch.arange(s) for s in activations.shape[1:]]):
            i = (k, *position.tolist())
            denominator = 2 * second[i] + total * third[i]
            alpha = second[i] / denominator if denominator != 0 else 0.0
            weight += alpha * max(float(first[i]), 0.0)
        cam += weight * activations[k]
    return upsample(torch.relu(cam)[None, None].float(), list(x.shape[2:]))


@pytest.mark.parametrize("net", sorted(NETS))
def test_gradcam_pp_equals_the_papers_formula(net):
    model, x = NETS[net](), random_input(2, size=8)
    layer = model.get_submodule(model.target_layer)
    ours = GradCAMPlusPlus(model, model.target_layer).explain(x, TARGET[:2])
    for row in range(2):
        logit = model(x[row:row + 1])[0, TARGET[row]].detach()
        reference = _gradcam_pp_by_the_paper(model, layer, x[row:row + 1], int(TARGET[row]))
        # The paper's weights carry exp(y_c); ours leave that positive per-row factor out.
        assert relative_l2(ours[row:row + 1] * torch.exp(logit), reference) < 1e-4
    assert (ours >= 0).all() and no_hooks_left(model)


def test_3d_shapes():
    model = NETS["resnet"](spatial_dims=3)
    x = random_input(2, spatial_dims=3, size=8)
    for cls in (CAM, GradCAMPlusPlus):
        assert cls(model, model.target_layer).explain(x, TARGET[:2]).shape == (2, 1, 8, 8, 8)
