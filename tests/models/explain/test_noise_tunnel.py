from __future__ import annotations

import pytest
import torch
from captum.attr import GuidedBackprop, NoiseTunnel, Saliency

from models.explain.noise_tunnel import SmoothGrad, VarGrad
from tests.models.explain.nets import NETS, random_input, relative_l2

TARGET = torch.tensor([0, 2, 3])
SAMPLES, STDEV = 5, 0.3


def _captum_noise(x: torch.Tensor, seed: int) -> torch.Tensor:
    # The draw Captum's NoiseTunnel makes after torch.manual_seed(seed): image-major rows.
    torch.manual_seed(seed)
    noise = torch.normal(0, torch.full((x.shape[0] * SAMPLES, *x.shape[1:]), STDEV))
    return noise.view(x.shape[0], SAMPLES, *x.shape[1:])


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize(("cls", "nt_type"), [(SmoothGrad, "smoothgrad"), (VarGrad, "vargrad")])
@pytest.mark.parametrize(("base", "captum_base"), [("saliency", Saliency), ("guided_backprop", GuidedBackprop)])
def test_equal_to_captum_with_the_same_noise(net, cls, nt_type, base, captum_base):
    model, x = NETS[net](), random_input(3)
    ours = cls(model, base, n_samples=SAMPLES, max_rows=4).explain_channels(x, TARGET, noise=_captum_noise(x, 5))
    torch.manual_seed(5)
    reference = NoiseTunnel(captum_base(model)).attribute(x, nt_type=nt_type, nt_samples=SAMPLES, stdevs=STDEV,
                                                          target=TARGET)
    assert relative_l2(ours, reference) < 1e-4


def test_seeded_repeatable_and_scaled_to_the_range():
    model, x = NETS["densenet"](), random_input(2)
    smooth = SmoothGrad(model, n_samples=4, noise_level=0.1, seed=3)
    assert torch.equal(smooth.explain(x, TARGET[:2]), smooth.explain(x, TARGET[:2]))
    assert not torch.equal(smooth.explain(x, TARGET[:2]), SmoothGrad(model, n_samples=4, seed=4).explain(x, TARGET[:2]))
    big = (x * 10).flatten(1)
    noise = smooth.draw_noise(x * 10)
    assert noise.shape == (2, 4, *x.shape[1:])
    ratio = noise.flatten(1).std(1) / (0.1 * (big.amax(1) - big.amin(1)))
    assert torch.allclose(ratio, torch.ones(2), atol=0.1)
    assert (VarGrad(model, n_samples=4).explain_channels(x, TARGET[:2]) >= -1e-7).all()


def test_over_integrated_gradients_and_3d():
    model = NETS["resnet"](spatial_dims=3)
    x = random_input(2, spatial_dims=3, size=8)
    assert SmoothGrad(model, n_samples=3).explain(x, TARGET[:2]).shape == (2, 1, 8, 8, 8)
    model2 = NETS["resnet"]()
    maps = SmoothGrad(model2, "integrated_gradients", n_samples=2).explain(random_input(1), TARGET[:1])
    assert maps.shape == (1, 1, 12, 12)
    with pytest.raises(ValueError, match="per-channel"):
        SmoothGrad(model2, "gradcam")
