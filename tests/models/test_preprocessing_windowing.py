"""Grayscale DICOM pixels -> network input as the card's `input` says: window, MONOCHROME1 inversion, normalise.

The image is a 16-bit MONOCHROME1 array in modality units (what `app.ingest.pixels.load_frame` returns after
the rescale slope/intercept); the card's input size equals the image's, so resizing is the identity and every
expected value can be worked out by hand.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from models.card import CardError, load_card
from models.grayscale import Voi, Window
from models.preprocessing import prepare

# Modality values, uint16 as a 16-bit DICOM stores them.
IMAGE = np.array(
    [
        [0, 1000, 2000, 3000],
        [500, 1500, 2500, 65535],
        [1000, 1000, 1000, 1000],
        [2000, 2000, 2000, 2000],
    ],
    dtype=np.uint16,
)
WINDOW = {"center": 1500.0, "width": 2000.0}  # [500, 2500] -> [0, 1]
# (v - 500) / 2000 clipped to [0, 1]: the window alone, before any inversion.
WINDOWED = np.array(
    [
        [0.0, 0.25, 0.75, 1.0],
        [0.0, 0.5, 1.0, 1.0],
        [0.25, 0.25, 0.25, 0.25],
        [0.75, 0.75, 0.75, 0.75],
    ],
    dtype=np.float32,
)
MEAN, STD = 0.5, 0.25


@pytest.fixture
def card(make_model_folder):
    base = load_card(make_model_folder())
    spec = dataclasses.replace(
        base.input, size=(4, 4), channels=1, colour="grayscale", mean=(MEAN,), std=(STD,),
        windowing=dict(WINDOW), invert_monochrome1=True,
    )
    return dataclasses.replace(base, input=spec)


def _with(card, **spec):
    return dataclasses.replace(card, input=dataclasses.replace(card.input, **spec))


def _expected(unit: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((unit - MEAN) / STD)[None, None]


def test_monochrome1_is_windowed_then_inverted_then_normalised(card):
    x = prepare(IMAGE, card, photometric="MONOCHROME1")
    # By hand: stored 0 -> window 0 -> inverted 1 -> (1 - 0.5) / 0.25 = 2; 1000 -> 0.25 -> 0.75 -> 1;
    # 1500 -> 0.5 -> 0.5 -> 0; 2000 -> 0.75 -> 0.25 -> -1; 3000 and 65535 clip to 1 -> 0 -> -2.
    expected = torch.tensor(
        [[2.0, 1.0, -1.0, -2.0], [2.0, 0.0, -2.0, -2.0], [1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]]
    )[None, None]
    assert x.shape == (1, 1, 4, 4) and x.dtype == torch.float32
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(x, _expected(1.0 - WINDOWED))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "", "monochrome2 "])
def test_monochrome2_is_not_inverted(card, photometric):
    torch.testing.assert_close(prepare(IMAGE, card, photometric=photometric), _expected(WINDOWED))


def test_monochrome1_stays_as_stored_when_the_card_does_not_invert(card):
    x = prepare(IMAGE, _with(card, invert_monochrome1=False), photometric="MONOCHROME1")
    torch.testing.assert_close(x, _expected(WINDOWED))


def _file_window(center: float, width: float) -> Voi:
    """A file's VOI LUT Module with one window whose VOI LUT Function is LINEAR_EXACT: [c - w/2, c + w/2] -> [0, 1]."""
    return Voi(windows=(Window(center, width, "LINEAR_EXACT"),))


def test_the_files_own_window_when_the_card_says_dicom(card):
    dicom = _with(card, windowing="dicom")
    x = prepare(IMAGE, dicom, photometric="MONOCHROME1", voi=_file_window(1500.0, 2000.0))
    torch.testing.assert_close(x, _expected(1.0 - WINDOWED))
    # Another file window gives another input: [0, 1000] -> [0, 1].
    other = prepare(IMAGE, dicom, photometric="MONOCHROME2", voi=_file_window(500.0, 1000.0))
    assert other[0, 0, 0].tolist() == pytest.approx([(0.0 - MEAN) / STD, (1.0 - MEAN) / STD, 2.0, 2.0])


def test_dicom_windowing_without_a_file_window_falls_back_to_percentile(card):
    ramp = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (100, 1))  # (100, 100), 0..3960
    ramp[0, 0] = 65535  # a hot pixel does not stretch the window
    gray = _with(card, size=(100, 100))
    x = prepare(ramp, _with(gray, windowing="dicom"), photometric="MONOCHROME2")
    torch.testing.assert_close(x, prepare(ramp, _with(gray, windowing="percentile"), photometric="MONOCHROME2"))
    # The 1st-99th percentiles are ~40 and ~3920: the middle column (2000) sits at ~0.5, i.e. ~0 normalised.
    assert x[0, 0, 50, 50].item() == pytest.approx(0.0, abs=0.02)


def test_minmax_on_16_bit_is_the_images_own_range(card):
    x = prepare(IMAGE, _with(card, windowing="minmax", invert_monochrome1=False))
    assert x.min().item() == pytest.approx(-2.0) and x.max().item() == pytest.approx(2.0)
    assert x[0, 0, 0, 1].item() == pytest.approx((1000 / 65535 - MEAN) / STD)


def test_colour_photographs_ignore_the_grayscale_windowing(card):
    rgb_card = _with(card, channels=3, colour="rgb", mean=(MEAN,) * 3, std=(STD,) * 3)
    image = np.full((4, 4, 3), 51, dtype=np.uint8)  # 51 / 255 = 0.2
    x = prepare(image, rgb_card, photometric="MONOCHROME1", voi=_file_window(1500.0, 2000.0))
    torch.testing.assert_close(x, torch.full((1, 3, 4, 4), (0.2 - MEAN) / STD))


def test_card_accepts_dicom_windowing(make_model_folder):
    from tests.models.conftest import card_data

    spec = {**card_data()["input"], "windowing": "dicom", "invert_monochrome1": True}
    card = load_card(make_model_folder(input=spec))
    assert card.input.windowing == "dicom" and card.as_dict()["input"]["windowing"] == "dicom"
    folder = card.folder
    data = json.loads((folder / "card.json").read_text())
    data["input"]["windowing"] = "voi"
    (folder / "card.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match="'dicom'"):
        load_card(folder)
