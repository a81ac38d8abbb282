from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.card import InputSpec, load_card
from models.preprocessing import crop_fundus, prepare


@pytest.fixture
def card(make_model_folder):
    return load_card(make_model_folder())


def _with(card, **spec):
    return dataclasses.replace(card, input=dataclasses.replace(card.input, **spec))


def _gray_card(card):
    return _with(card, channels=1, colour="grayscale", mean=(0.5,), std=(0.25,))


def test_rgb_uint8_to_rgb(card):
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    x = prepare(image, card)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32


def test_grayscale_float_to_rgb_and_gray(card):
    image = np.random.default_rng(0).normal(500, 200, (64, 48)).astype(np.float32)
    rgb = prepare(image, card)
    gray = prepare(image, _gray_card(card))
    assert rgb.shape == (1, 3, 16, 16) and gray.shape == (1, 1, 16, 16)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.allclose(rgb[:, :1], gray)


def test_rgb_to_grayscale(card):
    image = np.full((20, 20, 3), 255, dtype=np.uint8)
    x = prepare(image, _gray_card(card))
    assert x.shape == (1, 1, 16, 16) and torch.allclose(x, torch.full_like(x, (1.0 - 0.5) / 0.25))


def test_scaling_and_normalisation(card):
    # min-max for grayscale: a ramp spans [0, 1] whatever its range.
    ramp = np.tile(np.linspace(-1000, 3000, 16, dtype=np.float32), (16, 1))
    x = prepare(ramp, _gray_card(card))
    assert x.min().item() == pytest.approx(-2.0) and x.max().item() == pytest.approx(2.0)


@pytest.mark.parametrize("shape", [(10, 10, 4), (10,), (2, 10, 10, 3), (0, 5)])
def test_wrong_input_shape(card, shape):
    with pytest.raises(ValueError):
        prepare(np.zeros(shape, dtype=np.uint8), card)


def test_3d_card_is_refused(card):
    with pytest.raises(ValueError, match="2D inputs"):
        prepare(np.zeros((8, 8), np.float32), _with(card, size=(4, 8, 8)))


def test_fundus_crop_finds_the_disc_and_keeps_it_round():
    height, width = 300, 450
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - 150) ** 2 + (xx - 200) ** 2 < 120**2
    pixels = np.zeros((height, width, 3), np.float32)
    pixels[disc] = (0.8, 0.4, 0.2)
    pixels += np.random.default_rng(0).uniform(0, 0.02, pixels.shape).astype(np.float32)  # sensor noise
    cropped = crop_fundus(pixels)
    assert cropped.shape[0] == cropped.shape[1]
    assert abs(cropped.shape[0] - 240) <= 2


def test_fundus_crop_in_prepare(card):
    fundus_card = _with(card, crop="fundus")
    image = np.zeros((200, 400, 3), np.uint8)
    image[50:150, 150:250] = 200
    x = prepare(image, fundus_card)
    # The bright square fills the whole input after the crop.
    assert torch.allclose(x, torch.full_like(x, (200 / 255 - 0.5) / 0.25), atol=1e-5)
    assert isinstance(fundus_card.input, InputSpec)


def test_region_and_to_image_space_put_the_map_back_where_the_fundus_is() -> None:
    from models.preprocessing import crop_fundus_with_region, to_image_space

    image = np.zeros((300, 500, 3), dtype=np.float32)
    image[50:250, 100:400] = 0.8  # the "fundus": 200 rows x 300 columns, off centre
    square, region = crop_fundus_with_region(image)
    assert square.shape == (300, 300, 3)
    # The padded square covers rows -50+50=0..300 and columns 100..400 of the image.
    assert (region.top, region.left, region.height, region.width) == (0, 100, 300, 300)
    mapped = to_image_space(torch.ones(1, 1, 28, 28), region, max_side=500)
    assert mapped.shape == (1, 1, 300, 500)
    assert torch.all(mapped[0, 0, :, 100:400] == 1)
    assert torch.all(mapped[0, 0, :, :100] == 0) and torch.all(mapped[0, 0, :, 400:] == 0)


def test_to_image_space_keeps_aspect_and_clips_padding_outside_the_image() -> None:
    from models.preprocessing import InputRegion, to_image_space

    # A square input whose region reaches 100 px above and below a 200 x 1000 image.
    region = InputRegion((200, 1000), -100, 300, 400, 400)
    attribution = torch.zeros(1, 1, 4, 4)
    attribution[0, 0, 1:3, :] = 2.0  # the middle half of the input: the image rows
    mapped = to_image_space(attribution, region, max_side=500)
    assert mapped.shape == (1, 1, 100, 500)
    assert mapped[0, 0, 50, 250].item() == pytest.approx(2.0)
    assert torch.all(mapped[0, 0, :, :150] == 0)


def _the_long_way(image: np.ndarray, card) -> tuple[torch.Tensor, object]:  # type: ignore[no-untyped-def]
    """Steps 1-5 one after the other, as for any image: what the photographs' short way must equal."""
    from models import preprocessing

    pixels = preprocessing.to_unit_range(image, card.input)
    pixels, region = preprocessing.crop_fundus_with_region(pixels)
    pixels = preprocessing.convert_colour(pixels, card.input.colour)
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    return preprocessing._resize_and_normalise(x, card.input), region


@pytest.mark.parametrize("model", ["dr-grading-retinamnist", "fundus-lesions-idrid"])
def test_a_photograph_is_prepared_the_short_way_to_the_same_values(model: str) -> None:
    from pathlib import Path

    from PIL import Image

    from models.preprocessing import prepare_with_region

    root = Path(__file__).resolve().parents[2]
    card = load_card(root / "models" / "zoo" / model)
    photographs = [np.asarray(Image.open(root / "data" / "idrid" / f"IDRiD_{n:02d}.jpg").convert("RGB"))
                   for n in (1, 2, 9)]
    dark = np.zeros((40, 60, 3), dtype=np.uint8)  # no fundus found: the whole image, unpadded
    small = np.load(root / "data" / "retinamnist.npz")["test_images"][:5]
    for image in [*photographs, dark, *small]:
        expected, expected_region = _the_long_way(image, card)
        x, region = prepare_with_region(image, card)
        assert region == expected_region
        assert torch.equal(x, expected)


def test_a_region_found_at_a_reduced_scale_lies_where_it_is_on_the_full_image() -> None:
    from models.preprocessing import InputRegion

    region = InputRegion((356, 536), -36, 36, 428, 428)  # the fundus square of IDRiD_01 decoded at 1/8
    assert region.on_image_of_shape((2848, 4288)) == InputRegion((2848, 4288), -288, 288, 3424, 3424)
    assert region.on_image_of_shape((356, 536)) is region
    # Each axis by its own ratio (libjpeg rounds a reduced side up).
    assert InputRegion((107, 128), 0, 10, 107, 107).on_image_of_shape((855, 1024)) == InputRegion(
        (855, 1024), 0, 80, 855, 856
    )


def test_decode_min_side_gives_the_input_its_oversampling() -> None:
    from pathlib import Path

    from models.preprocessing import DECODE_OVERSAMPLING, decode_min_side

    root = Path(__file__).resolve().parents[2] / "models" / "zoo"
    assert decode_min_side(load_card(root / "dr-grading-retinamnist")) == DECODE_OVERSAMPLING * 28
    assert decode_min_side(load_card(root / "fundus-lesions-idrid")) == DECODE_OVERSAMPLING * 512
