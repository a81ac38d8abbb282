"""The synthetic task of the cxr-demo recipe: nodules of the stated size and contrast in the lung fields,
masks and labels that agree, the input prepared as the worker prepares it, and a loss that reaches the
network through its class activation map. No training here (tests/models/test_training.py smoke-trains)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.card import load_card
from models.networks import build_network
from models.preprocessing import prepare
from models.training import normalise

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"
CXR = Path(__file__).resolve().parents[2] / "data" / "cxr"

pytestmark = pytest.mark.skipif(not (CXR / "00000001_000.png").is_file(), reason="data/cxr is not in this checkout")


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    from models.recipes import cxr

    return cxr.load_radiograph(CXR / cxr.TRAIN_FILES[0])


def test_lung_fields_are_two_dark_regions_of_the_central_field(base):
    from scipy import ndimage

    from models.recipes import cxr

    lung = cxr.lung_fields(base)
    assert ndimage.label(lung)[1] == 2
    assert 0.08 < lung.mean() < 0.3 and base[lung].mean() < cxr.LUNG_LEVEL
    rows, cols = np.nonzero(lung)
    assert rows.min() >= base.shape[0] // 8 and rows.max() < base.shape[0] - base.shape[0] // 8
    # One lung on each side of the mediastinum.
    assert cols.min() < base.shape[1] * 0.4 and cols.max() > base.shape[1] * 0.6


def test_a_nodule_has_the_stated_size_and_a_fraction_of_the_local_contrast(base):
    from models.recipes import cxr

    rng = np.random.default_rng(0)
    for _ in range(20):
        centre = (256, 150)
        region, opacity, footprint, diameter = cxr.nodule(base, centre, rng)
        assert cxr.DIAMETER_MM[0] <= diameter <= cxr.DIAMETER_MM[1]
        radius_px = diameter / 2 / cxr.SPACING_MM
        # The footprint is an ellipse with semi-axes within 15% of the radius.
        assert 0.85**2 * np.pi * radius_px**2 - 4 <= footprint.sum() <= 1.15**2 * np.pi * radius_px**2 + 4
        assert opacity.shape == footprint.shape == base[region].shape
        # Peak at the centre, smooth fall-off: no step at the footprint's edge.
        peak = np.unravel_index(opacity.argmax(), opacity.shape)
        assert peak == (centre[0] - region[0].start, centre[1] - region[1].start)
        assert opacity.min() >= 0 and opacity[~footprint].max() < 0.6 * opacity.max()
        half = region[0].stop - centre[0] - 1
        near = base[centre[0] - 3 * half : centre[0] + 3 * half + 1, centre[1] - 3 * half : centre[1] + 3 * half + 1]
        low, high = np.percentile(near, [10, 90])
        assert cxr.CONTRAST[0] * (high - low) - 1e-6 <= opacity.max() <= cxr.CONTRAST[1] * (high - low) + 1e-6


def test_synthetic_samples_label_mask_and_diameter_agree_and_are_seeded(base):
    from models.recipes import cxr

    first = cxr.synthesise([base], 24, np.random.default_rng(5))
    second = cxr.synthesise([base], 24, np.random.default_rng(5))
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    assert first.x.shape == (24, 1, cxr.SIZE, cxr.SIZE) and first.masks.shape == (24, cxr.SIZE, cxr.SIZE)
    assert float(first.x.min()) >= 0 and float(first.x.max()) <= 1
    has_mask = first.masks.flatten(1).any(1)
    assert torch.equal(has_mask, first.y == 1) and 0 < int(first.y.sum()) < 24
    assert np.array_equal(first.diameter_mm > 0, first.y.numpy() == 1)


def test_training_input_is_what_the_worker_prepares():
    """A grayscale PNG reaches `prepare` as (H, W) float32 (app.ingest.pixels.load_image); the recipe's
    un-augmented sample of the whole radiograph, normalised, must be the same tensor."""
    from PIL import Image

    from models.recipes import cxr

    card = load_card(ZOO / "cxr-demo")
    assert card.input.size == (cxr.SIZE, cxr.SIZE) and card.input.windowing == "percentile"
    path = CXR / cxr.TEST_FILE
    served = prepare(np.asarray(Image.open(path)).astype(np.float32), card)
    trained = torch.from_numpy(cxr.resize(cxr.load_radiograph(path), "bilinear"))[None, None]
    trained = normalise(trained, list(card.input.mean), list(card.input.std))
    assert torch.allclose(served, trained, atol=1e-4)


def test_patches_hold_the_nodule_and_the_loss_reaches_the_activation_map(base):
    from models.recipes import cxr

    samples = cxr.synthesise([base], 8, np.random.default_rng(1))
    x, masks = cxr.training_patches(samples.x, samples.masks, np.random.default_rng(2))
    assert x.shape == (8, 1, cxr.PATCH, cxr.PATCH) and masks.shape == (8, cxr.PATCH, cxr.PATCH)
    assert torch.equal(masks.flatten(1).sum(1), samples.masks.flatten(1).sum(1))  # whole nodules
    torch.manual_seed(0)
    model = build_network(cxr.ARCH, **cxr.NETWORK).eval()  # no dropout: both losses see the same logits
    loss = cxr.nodule_loss(model, x, samples.y, masks)
    image_only = torch.nn.functional.cross_entropy(model(x), samples.y)
    assert torch.isfinite(loss) and loss > image_only
    loss.backward()
    assert model.features.stem.weight.grad.abs().sum() > 0
