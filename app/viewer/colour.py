"""A colour frame at full resolution in the form the browser shows fastest, never a lossy re-encoding.

A JPEG upload, or a DICOM frame stored as baseline JPEG (1.2.840.10008.1.2.4.50) in YCbCr, travels as the
stored JPEG bytes themselves: a 4288 x 2848 fundus photograph is about 0.4 MB that way and about 17 MB as PNG,
whose encoding alone took 1.5 s. The browser decodes it with the libjpeg-turbo that decodes it on the server
(colour transform and chroma upsampling by the JPEG's own markers, as pydicom does for a YBR_FULL_422 frame);
viewer.js asks createImageBitmap for no colour management, as the server's decode has none. A JPEG the browser
would show otherwise (an EXIF orientation that turns it, CMYK, 12 bits) and every other colour frame travel as
the full PNG rendering, kept as a derived blob (images.instance_png).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import JPEGBaseline8Bit

from app.ingest import pixels as ingest_pixels
from app.storage import get_blob_store
from app.tables import Instance
from app.viewer import images

# The photometric interpretations of a baseline JPEG frame whose colour transform the JPEG stream itself
# describes (PS3.5 8.2.1): what the browser does with its markers is what pydicom does.
_PASSED_PHOTOMETRICS = ("YBR_FULL_422", "YBR_FULL")
_EXIF_ORIENTATION = 0x0112
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"


@dataclass(frozen=True)
class FullImage:
    body: bytes
    media_type: str


def full_image(instance: Instance, *, frame: int) -> FullImage:
    """The frame as the stored JPEG when the browser shows it as the server decodes it, else as full PNG."""
    jpeg = stored_jpeg(instance, frame=frame)
    if jpeg is not None:
        return FullImage(jpeg, "image/jpeg")
    return FullImage(images.instance_png(instance=instance, frame=frame, max_size=None), "image/png")


def full_image_etag(instance: Instance, *, frame: int) -> str:
    """Whether the JPEG is passed through depends on the stored file alone: one tag for either form."""
    return images.instance_etag(instance, frame=frame, max_size=None).replace('"', '"full-', 1)


def stored_jpeg(instance: Instance, *, frame: int) -> bytes | None:
    """The JPEG bytes stored for this frame, when they can be sent as they are; None otherwise."""
    if not 0 <= frame < max(instance.frames, 1):
        raise images.FrameOutOfRange(f"instance {instance.id} has {instance.frames} frame(s), not frame {frame}")
    jpeg: bytes | None
    if instance.source_format == "jpeg":
        jpeg = get_blob_store().get(instance.storage_key)
    elif instance.source_format == "dicom" and instance.transfer_syntax_uid == JPEGBaseline8Bit:
        dataset = ingest_pixels.read_dicom(get_blob_store().get(instance.storage_key))
        jpeg = encapsulated_jpeg(dataset, frame=frame)
    else:
        return None
    return jpeg if jpeg is not None and browser_shows_as_stored(jpeg) else None


def encapsulated_jpeg(dataset: Dataset, *, frame: int) -> bytes | None:
    """One frame's JPEG stream of a baseline-JPEG colour DICOM (its trailing pad byte dropped); None when the
    DICOM header gives the frame a colour meaning of its own."""
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    if (
        dataset.file_meta.get("TransferSyntaxUID") != JPEGBaseline8Bit
        or dataset.get("SamplesPerPixel") != 3
        or photometric not in _PASSED_PHOTOMETRICS
    ):
        return None
    count = ingest_pixels.dataset_frame_count(dataset)
    jpeg = get_frame(dataset.PixelData, frame, number_of_frames=count)
    if jpeg.endswith(_EOI + b"\x00"):
        jpeg = jpeg[:-1]  # fragments have even lengths (PS3.5 A.4)
    return jpeg if jpeg.startswith(_SOI) else None


def browser_shows_as_stored(jpeg: bytes) -> bool:
    """An 8-bit RGB or grey JPEG that no EXIF orientation turns (browsers apply it; the server does not)."""
    try:
        with Image.open(io.BytesIO(jpeg)) as image:  # reads the header only
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            return image.format == "JPEG" and image.mode in ("RGB", "L") and orientation == 1
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError...: the PNG path reports the error
        return False
