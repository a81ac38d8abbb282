from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.datasets import IDRID_DIR, IDRID_HELDOUT, idrid_heldout, load_idrid
from models.recipes.idrid_data import green_contour

pytestmark = pytest.mark.skipif(not (IDRID_DIR / "IDRiD_01.jpg").is_file(), reason="data/idrid is not in this checkout")


def test_idrid_heldout_hook_gives_images_with_aligned_masks():
    items = idrid_heldout(size=512)
    assert [name for _, _, name in items] == list(IDRID_HELDOUT)
    for image, masks, name in items:
        assert image.dtype == np.uint8 and image.shape[2] == 3 and max(image.shape[:2]) == 512
        assert all(mask.shape == image.shape[:2] and mask.dtype == bool for mask in masks.values())
        assert masks["hard_exudates"].any()
        if name == "IDRiD_55":
            assert set(masks) == {"hard_exudates"}  # only exudates were annotated for 55
        else:
            assert {"haemorrhages", "microaneurysms", "optic_disc"} <= set(masks)


def test_the_drawn_green_contour_is_gone_and_the_optic_disc_mask_is_on_bright_pixels():
    item = load_idrid(["IDRiD_01"])[0]
    assert green_contour(item.image).sum() == 0
    disc = item.masks["optic_disc"]
    assert disc.sum() > 1000
    luminance = item.image.astype(float).mean(axis=2)
    assert luminance[disc].mean() > luminance[item.image.max(axis=2) > 20].mean() + 20


def test_missing_idrid_file_is_a_clear_error(tmp_path: Path):
    from models.datasets import TrainingDataError

    with pytest.raises(TrainingDataError, match="cannot read IDRiD_01"):
        load_idrid(["IDRiD_01"], folder=tmp_path)


def test_monochrome1_dicom_is_windowed_and_inverted():
    dicom = IDRID_DIR.parent / "cxr" / "RG1_J2KI.dcm"
    if not dicom.is_file():
        pytest.skip("data/cxr is not in this checkout")
    import pydicom

    from models.recipes.cxr import load_radiograph

    ds = pydicom.dcmread(dicom)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored > 8
    image = load_radiograph(dicom)
    assert image.dtype == np.float32 and max(image.shape) == 512 and 0 <= image.min() < image.max() <= 1
    from PIL import Image

    raw = np.asarray(Image.fromarray(ds.pixel_array.astype(np.float32)).resize(image.shape[::-1]))
    # MONOCHROME1 stores dark as high: after inversion the image is anti-correlated with the stored values.
    assert np.corrcoef(raw.ravel(), image.ravel())[0, 1] < -0.9
