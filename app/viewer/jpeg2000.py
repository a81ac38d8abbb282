"""A grayscale frame stored as JPEG 2000, sent as its own codestream for the browser to decode.

A lossy JPEG 2000 radiograph's decoded values carry the wavelet's fine texture, which no lossless coding the
browser has built in halves (docs/pixel-transport.md: RG1 at 64% of raw with the best of them); its stored
codestream is 9%. The browser decodes it with OpenJPEG compiled to WebAssembly (app/static/vendor/openjpeg),
the library the server's decoders use, and gets the same samples.

The body is the codestream, then whatever follows the pixels in the raw body (the VOI LUT tables): the meta is
the raw form's (rows, columns, offset, scale, presets...) with `encoding` "jpeg2000", `codestream_length`, and
how a decoded sample becomes the raw form's stored value: `stored = sample + sample_shift`, samples of
`sample_bytes` bytes, `signed` or not. That holds only where the raw form's scale is 1 and the modality LUT is a
shift by an integer; it is checked on every value when the form is made, and a frame where it does not hold (or
that is not JPEG 2000) is not sent this way (`codestream_frame` returns None).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import get_j2k_parameters
from pydicom.uid import JPEG2000, JPEG2000Lossless

from app.ingest import pixels as ingest_pixels
from app.storage import get_blob_store
from app.tables import Instance
from app.viewer.encodings import PixelEncoding

logger = logging.getLogger(__name__)

TRANSFER_SYNTAXES = (JPEG2000Lossless, JPEG2000)


def codestream_frame(instance: Instance, *, frame: int, raw_meta: dict, raw_body: bytes) -> tuple[dict, bytes] | None:
    """The frame's meta and body in the `jpeg2000` form, from its raw form (`raw.raw_frame`); None where the
    frame is not a grayscale JPEG 2000 codestream whose samples map onto the raw values by an integer shift."""
    # The instance row names its transfer syntax: other files are not read again to find out.
    if (
        instance.source_format != "dicom"
        or instance.transfer_syntax_uid not in TRANSFER_SYNTAXES
        or raw_meta.get("scale") != 1.0
    ):
        return None
    ds = ingest_pixels.read_dicom(get_blob_store().get(instance.storage_key))
    if int(ds.get("SamplesPerPixel") or 1) != 1 or int(ds.get("BitsAllocated") or 0) not in (8, 16):
        return None
    count = ingest_pixels.dataset_frame_count(ds)
    try:
        codestream = next(
            stream for index, stream in enumerate(generate_frames(ds.PixelData, number_of_frames=count))
            if index == frame
        )
        # The browser's decoder gives the codestream's own samples: where its sign is not the header's (pydicom
        # then corrects the samples), or it is a JP2 file rather than a codestream, only the raw values say.
        parameters = get_j2k_parameters(codestream)
        if parameters.get("is_signed") != bool(ds.get("PixelRepresentation")) or parameters.get("jp2", False):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            samples = ingest_pixels.frame_samples(ds, frame)
    except Exception as exc:  # an odd encapsulation: the deflate form is sent instead
        logger.info("instance %s frame %s not sent as JPEG 2000: %s", instance.id, frame, exc)
        return None
    rows, columns = raw_meta["rows"], raw_meta["columns"]
    stored = np.frombuffer(raw_body, dtype="<u2", count=rows * columns).reshape(rows, columns).astype(np.int64)
    if samples.shape != stored.shape or samples.dtype.kind not in "iu":
        return None
    shift = int(stored[0, 0]) - int(samples[0, 0])
    if not np.array_equal(samples.astype(np.int64) + shift, stored):
        return None  # a modality LUT that is more than a shift: only the raw values say it
    meta = {
        **raw_meta,
        "encoding": str(PixelEncoding.jpeg2000),
        "codestream_length": len(codestream),
        "sample_shift": shift,
        "sample_bytes": samples.dtype.itemsize,
        "signed": samples.dtype.kind == "i",
    }
    return meta, codestream + raw_body[stored.size * 2 :]
