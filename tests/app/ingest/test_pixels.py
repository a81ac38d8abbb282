"""app.ingest.pixels on real files: every encoding Lumen promises, display windowing, clear decode errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut

from app.ingest import files, pixels
from tests.voi import pydicom_display, with_bent_lut

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DICOM = FIXTURES / "dicom"
IMAGES = FIXTURES / "images"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _dicom(name: str) -> bytes:
    return (DICOM / name).read_bytes()


def test_jpeg2000_monochrome1_radiograph_decodes_and_displays_inverted() -> None:
    data = _dicom("RG1_J2KI.dcm")
    raw = pixels.load_frame(data, "dicom")
    assert raw.shape == (1955, 1841) and raw.dtype == np.float32
    ds = pixels.read_dicom(data)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    center, width = pixels.header_window(ds)
    as_monochrome2 = pixels.to_display(raw, photometric="MONOCHROME2", window_center=center, window_width=width)
    shown = pixels.to_display(raw, photometric="MONOCHROME1", window_center=center, window_width=width)
    assert shown.dtype == np.uint8 and shown.shape == raw.shape
    np.testing.assert_array_equal(shown, 255 - as_monochrome2)
    # High raw values are dark in MONOCHROME1: raw brightness and displayed brightness run opposite ways.
    bright_raw = raw > np.percentile(raw, 90)
    assert shown[bright_raw].mean() < shown[~bright_raw].mean()


def test_palette_colour_decodes_to_rgb() -> None:
    # The file has no preamble: ingest stores it as Part 10, which is what load_frame reads.
    data = files.to_part10(filename="face", data=_dicom("OT-PAL-8-face.dcm"))
    rgb = pixels.load_frame(data, "dicom")
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])  # real colours, not grey in three channels


@pytest.mark.parametrize(
    ("name", "shape", "frames"),
    [
        ("emri_small_jpeg_ls_lossless.dcm", (64, 64), 10),  # JPEG-LS lossless, multi-frame
        ("JPEG-LL.dcm", (1024, 256), 1),  # JPEG lossless process 14
        ("emri_small_RLE.dcm", (64, 64), 10),  # RLE, multi-frame
        ("HTJ2K_08_RGB.dcm", (480, 640, 3), 1),  # HTJ2K
        ("emri_small.dcm", (64, 64), 10),  # native multi-frame
    ],
)
def test_encodings_decode(name: str, shape: tuple[int, ...], frames: int) -> None:
    data = _dicom(name)
    assert pixels.frame_count(data, "dicom") == frames
    first = pixels.load_frame(data, "dicom", 0)
    last = pixels.load_frame(data, "dicom", frames - 1)
    assert first.shape == shape and last.shape == shape
    assert float(np.ptp(first)) > 0


def test_lossless_encodings_agree_with_native() -> None:
    native = pixels.load_frame(_dicom("emri_small.dcm"), "dicom", 3)
    for name in ("emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(pixels.load_frame(_dicom(name), "dicom", 3), native)


def test_rescale_slope_intercept_is_applied() -> None:
    data = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    hu = pixels.load_frame(data, "dicom")
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(hu, expected)


@pytest.mark.parametrize(("name", "fmt"), [("IDRiD_03_small.jpg", "jpeg"), ("IDRiD_03_small.png", "png")])
def test_fundus_images_decode_to_rgb(name: str, fmt: str) -> None:
    data = (IMAGES / name).read_bytes()
    rgb = pixels.load_frame(data, fmt)
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
    assert pixels.frame_count(data, fmt) == 1
    assert pixels.to_display(rgb, photometric="RGB", window_center=None, window_width=None) is rgb


def test_grayscale_png_is_float() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(buffer, format="PNG")
    gray = pixels.load_frame(buffer.getvalue(), "png")
    assert gray.shape == (16, 16) and gray.dtype == np.float32 and gray.max() == 255


def test_linear_window_follows_dicom_formula() -> None:
    values = np.array([[0.0, 40.0, 80.0, 120.0]], dtype=np.float32)
    shown = pixels.to_display(values, photometric="MONOCHROME2", window_center=40.5, window_width=81.0)
    # ((x - 40) / 80 + 0.5) * 255, clipped.
    np.testing.assert_array_equal(shown, [[0, 128, 255, 255]])


def test_auto_window_and_flat_image() -> None:
    ramp = np.linspace(0, 1000, 10_000, dtype=np.float32).reshape(100, 100)
    shown = pixels.to_display(ramp, photometric="MONOCHROME2", window_center=None, window_width=None)
    assert shown.min() == 0 and shown.max() == 255
    flat = pixels.to_display(np.full((4, 4), 7.0), photometric="MONOCHROME2", window_center=None, window_width=None)
    assert (flat == 0).all()


def test_truncated_pixel_data_is_a_decode_error() -> None:
    data = _dicom("emri_small.dcm")
    ds = pixels.read_dicom(data[:-1000])
    with pytest.raises(pixels.PixelDecodeError, match="truncated"):
        pixels.check_decodable(ds)


def test_corrupt_codestream_is_a_decode_error() -> None:
    ds = pixels.read_dicom(_dicom("RG1_J2KI.dcm"))
    frame = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
    codestream = next(frame)
    ds.PixelData = pydicom.encaps.encapsulate([codestream[:200] + b"\x00" * 50])
    with pytest.raises(pixels.PixelDecodeError, match="undecodable"):
        pixels.check_decodable(ds)


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(pixels.PixelDecodeError):
        pixels.load_frame(b"\x89PNG\r\n\x1a\nnot really", "png")
    with pytest.raises(pixels.PixelDecodeError, match="unreadable DICOM"):
        pixels.load_frame(b"hello", "dicom")
    with pytest.raises(pixels.PixelDecodeError, match="out of range"):
        pixels.load_frame(_dicom("JPEG-LL.dcm"), "dicom", 1)


def _bytes_of(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("vlut_04.dcm", lambda ds: ds),  # a VOI LUT Sequence
        ("vlut_04.dcm", with_bent_lut),
        ("MR_small.dcm", lambda ds: setattr(ds, "VOILUTFunction", "SIGMOID") or ds),
        ("MR_small.dcm", lambda ds: setattr(ds, "VOILUTFunction", "LINEAR_EXACT") or ds),
        ("MR_small.dcm", lambda ds: ds),  # LINEAR, the function a header names by naming none
    ],
    ids=["voi-lut", "voi-lut-bent", "sigmoid", "linear-exact", "linear"],
)
def test_the_display_follows_the_files_voi_as_pydicom_does(name: str, change) -> None:
    path = DICOM / name if (DICOM / name).is_file() else PYDICOM_FILES / name
    ds = change(pydicom.dcmread(path))
    array, voi = pixels.load_frame_and_voi(_bytes_of(ds), "dicom")
    shown = pixels.to_display(array, photometric="MONOCHROME2", window_center=None, window_width=None, voi=voi)
    np.testing.assert_array_equal(shown, pydicom_display(ds))
    inverted = pixels.to_display(array, photometric="MONOCHROME1", window_center=None, window_width=None, voi=voi)
    np.testing.assert_array_equal(inverted, 255 - pydicom_display(ds))


def test_a_modality_lut_sequence_is_decoded_as_pydicom_applies_it() -> None:
    data = _dicom("mlut_18.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    frame, voi = pixels.load_frame_and_voi(data, "dicom")
    np.testing.assert_array_equal(frame, apply_modality_lut(ds.pixel_array, ds))
    assert voi is None  # no window, no VOI LUT: the automatic window


PHOTOGRAPH = Path(__file__).resolve().parents[3] / "data" / "idrid" / "IDRiD_01.jpg"  # 1024 x 855 JPEG


@pytest.mark.parametrize(
    ("min_side", "shape"),
    [(100, (107, 128)), (200, (214, 256)), (400, (428, 512)), (500, (855, 1024)), (5000, (855, 1024))],
)
def test_a_model_frame_of_a_jpeg_is_its_coarsest_dct_scale_that_keeps_min_side(min_side, shape) -> None:
    data = PHOTOGRAPH.read_bytes()
    frame = pixels.load_model_frame(data, "jpeg", min_side=min_side)
    assert frame.array.shape == (*shape, 3) and frame.array.dtype == np.uint8
    assert frame.full_shape == (855, 1024) and frame.voi is None
    # At a scale of its own the image is the same picture: close to the full decode shrunk to that size.
    full = Image.open(io.BytesIO(data)).convert("RGB").resize(shape[::-1], Image.Resampling.BOX)
    assert np.abs(frame.array.astype(np.float32) - np.asarray(full, dtype=np.float32)).mean() < 3


def test_a_model_frame_of_other_files_is_their_full_decode() -> None:
    png = io.BytesIO()
    Image.open(PHOTOGRAPH).convert("L").save(png, format="PNG")
    frame = pixels.load_model_frame(png.getvalue(), "png", min_side=100)
    np.testing.assert_array_equal(frame.array, pixels.load_image(png.getvalue()))
    assert frame.full_shape == (855, 1024)
    dicom = _dicom("RG1_J2KI.dcm")
    frame = pixels.load_model_frame(dicom, "dicom", min_side=100)
    array, voi = pixels.load_frame_and_voi(dicom, "dicom")
    np.testing.assert_array_equal(frame.array, array)
    assert frame.full_shape == (1955, 1841) and frame.voi == voi


def test_a_model_frame_of_a_broken_jpeg_says_why() -> None:
    with pytest.raises(pixels.PixelDecodeError, match="undecodable image"):
        pixels.load_model_frame(PHOTOGRAPH.read_bytes()[:2000], "jpeg", min_side=100)


def _jpeg_baseline_files() -> list[Path]:
    found = []
    for path in sorted(PYDICOM_FILES.glob("*.dcm")):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # pydicom's corpus holds deliberately broken files
            continue
        if header.file_meta.get("TransferSyntaxUID") == pydicom.uid.JPEGBaseline8Bit and "NumberOfFrames" not in header:
            found.append(path)
    return found


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_jpeg_baseline_dicom_at_full_scale_is_pydicoms_decode_bit_for_bit() -> None:
    paths = _jpeg_baseline_files()
    assert len(paths) >= 10  # YBR_FULL, YBR_FULL_422, RGB, with and without an Adobe marker
    for path in paths:
        ds = pixels.read_dicom(path.read_bytes())
        at_full_scale = pixels._reduced_jpeg_baseline(ds, min_side=min(ds.Rows, ds.Columns) - 1)
        assert at_full_scale is not None, path.name
        np.testing.assert_array_equal(at_full_scale, pixels.decode_frame(ds), err_msg=path.name)


def test_a_fundus_cameras_jpeg_baseline_dicom_is_decoded_reduced_for_a_model() -> None:
    data = (Path(__file__).resolve().parents[3] / "demo" / "IDRiD_01_OP_jpegbaseline.dcm").read_bytes()
    frame = pixels.load_model_frame(data, "dicom", min_side=224)
    assert frame.array.shape == (356, 536, 3) and frame.full_shape == (2848, 4288)  # 1/8
    full = pixels.load_frame(data, "dicom")
    shrunk = np.asarray(Image.fromarray(full).resize((536, 356), Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(frame.array.astype(np.float32) - shrunk).mean() < 3
    # Multi-frame, other encodings and a min_side above the image: the full decode.
    assert pixels.load_model_frame(data, "dicom", min_side=4000).array.shape == (2848, 4288, 3)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["RG1_J2KI.dcm", "RG3_J2KI.dcm", "MR2_J2KI.dcm", "US1_J2KR.dcm", "US1_J2KI.dcm"])
def test_jpeg2000_decoded_by_openjpeg_first_gives_gdcms_values(name: str) -> None:
    from pydicom.pixels import pixel_array

    ds = pixels.read_dicom(_dicom(name))
    for frame in range(min(pixels.dataset_frame_count(ds), 2)):
        ours = pixels.frame_samples(ds, frame)
        gdcm = pixel_array(pixels.read_dicom(_dicom(name)), index=frame, decoding_plugin="gdcm")
        assert ours.dtype == gdcm.dtype
        np.testing.assert_array_equal(ours, gdcm)
