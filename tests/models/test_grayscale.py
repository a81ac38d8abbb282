"""models.grayscale, the one path of display and model input, against pydicom's own LUT functions on real files:
a VOI LUT Sequence (vlut_04), a Modality LUT Sequence (mlut_18), each VOI LUT Function on a header window
(MR_small), an enhanced CT's per-frame groups (eCT_Supplemental)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from models import grayscale
from models.datasets import window_grayscale
from models.grayscale import Voi, Window
from tests.conftest import FIXTURES
from tests.voi import pydicom_unit, with_bent_lut

DICOM = FIXTURES / "dicom"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.mark.parametrize("bent", [False, True], ids=["as-shipped", "bent"])
def test_a_voi_lut_sequence_is_what_display_and_model_follow(bent: bool) -> None:
    ds = pydicom.dcmread(DICOM / "vlut_04.dcm")
    if bent:
        ds = with_bent_lut(ds)
    voi = grayscale.frame_voi(ds)
    assert voi is not None and voi.windows == () and len(voi.luts) == 1
    assert voi.default is voi.luts[0] and voi.luts[0].descriptor == (256, 0, 16)
    values = grayscale.modality_values(ds.pixel_array, ds)
    expected = pydicom_unit(ds)
    np.testing.assert_array_equal(grayscale.voi_unit(values, voi.default), expected)
    # A card that takes the file's own VOI ("dicom") gets the same values, as float32.
    np.testing.assert_allclose(window_grayscale(values, "dicom", voi=voi), expected, rtol=0, atol=1e-7)
    # The viewer showed a percentile stretch before: right for the straight LUT only.
    assert (np.abs(window_grayscale(values, "percentile") - expected).max() > 0.2) == bent


def test_a_modality_lut_sequence_gives_the_modality_values() -> None:
    ds = pydicom.dcmread(DICOM / "mlut_18.dcm")
    values = grayscale.modality_values(ds.pixel_array, ds)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, apply_modality_lut(ds.pixel_array, ds))
    assert not np.array_equal(values, ds.pixel_array)  # a real table, not the identity


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_the_headers_voi_lut_function_is_followed(function: str) -> None:
    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")  # Window Center 600, Width 1600
    ds.VOILUTFunction = function
    voi = grayscale.frame_voi(ds)
    assert voi == Voi(windows=(Window(600.0, 1600.0, function, "Header"),))
    values = grayscale.modality_values(ds.pixel_array, ds)
    expected = pydicom_unit(ds)
    np.testing.assert_allclose(grayscale.voi_unit(values, voi.default), expected, rtol=0, atol=1e-12)
    model = window_grayscale(values, "dicom", photometric="MONOCHROME1", invert_monochrome1=True, voi=voi)
    np.testing.assert_allclose(model, 1.0 - expected, rtol=0, atol=1e-6)  # and MONOCHROME1 inverted after


def test_the_functions_differ_where_dicom_says_they_do() -> None:
    values = np.array([-200.0, 599.5, 600.0, 1400.0], dtype=np.float32)
    linear, exact, sigmoid = (grayscale.voi_unit(values, Window(600.0, 1600.0, f)) for f in grayscale.VOI_FUNCTIONS)
    assert exact.tolist() == [0.0, 0.5 - 0.5 / 1600, 0.5, 1.0]
    assert linear[1] == pytest.approx(0.5) and linear[2] == pytest.approx(0.5 + 0.5 / 1599)
    assert sigmoid[2] == 0.5 and 0 < sigmoid[0] < 0.2 and 0.8 < sigmoid[3] < 1  # never quite black or white


def test_enhanced_frames_take_their_functional_groups() -> None:
    ds = pydicom.dcmread(DICOM / "eCT_Supplemental.dcm")
    voi = grayscale.frame_voi(ds, frame=1)
    assert voi is not None and voi.windows[0] == Window(49.0, 102.0, "LINEAR", "Header")
    stored = ds.pixel_array[1]
    np.testing.assert_array_equal(grayscale.modality_values(stored, ds, frame=1), stored.astype(np.float32) - 1024)


@pytest.mark.parametrize(
    ("elements", "windows"),
    [
        ({"WindowCenter": "40", "WindowWidth": "0"}, ()),  # no width
        ({"WindowCenter": "40", "WindowWidth": "0.5"}, ()),  # LINEAR needs a width of at least 1
        ({"WindowCenter": "40", "WindowWidth": "0.5", "VOILUTFunction": "SIGMOID"}, (Window(40, 0.5, "SIGMOID"),)),
        ({"WindowCenter": "40", "WindowWidth": "80", "VOILUTFunction": "GAMMA"}, ()),  # not a DICOM function
        (
            {"WindowCenter": ["40", "300"], "WindowWidth": ["400", "1500"],
             "WindowCenterWidthExplanation": ["SOFT", "LUNG"]},
            (Window(40, 400, name="SOFT"), Window(300, 1500, name="LUNG")),
        ),
    ],
)
def test_windows_pydicom_would_refuse_are_left_out(elements: dict, windows: tuple) -> None:
    ds = pydicom.Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    voi = grayscale.frame_voi(ds)
    named = tuple(Window(w.center, w.width, w.function, w.name or "Header") for w in windows)
    assert (voi.windows if voi else ()) == named


def test_presentation_inverts_monochrome1_only() -> None:
    unit = np.array([0.0, 0.25, 1.0])
    assert grayscale.present(unit, photometric="MONOCHROME1 ").tolist() == [1.0, 0.75, 0.0]
    assert grayscale.present(unit, photometric="MONOCHROME2") is unit
    assert grayscale.present(np.array([0, 255], np.uint8), photometric="MONOCHROME1", top=255).tolist() == [255, 0]
