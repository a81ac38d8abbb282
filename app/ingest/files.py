"""Check one uploaded file and read what the database needs from it. No database, no blob store.

Accepted: DICOM Part 10 files, DICOM datasets without preamble (given a file meta so that the stored blob is
Part 10; see `to_part10`), PNG and JPEG. Every DICOM image is decoded (frame 0, and the last frame of an
encapsulated multi-frame) before anything is stored; frame 0, decoded anyway, gives the file's preview.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from app.ingest import pixels, previews
from app.ingest.errors import IngestError
from models import grayscale

logger = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
PART10_PREAMBLE = b"\x00" * 128 + b"DICM"
DICOM_SUFFIXES = (".dcm", ".dicom")
# First tag of a dataset written without preamble: group 0002 or 0008, little or big endian.
_RAW_DATASET_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x08")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# Objects with pixels that are not images to read (a segmentation belongs to the image it segments).
_NOT_IMAGES = {"1.2.840.10008.5.1.4.1.1.66.4": "a segmentation (SEG)"}
OTHER_MODALITY = "OT"  # DICOM's code for "other", for headers without a Modality


@dataclass(frozen=True)
class StudyInfo:
    study_instance_uid: str
    description: str = ""
    study_date: str = ""
    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    accession_number: str = ""


@dataclass(frozen=True)
class SeriesInfo:
    series_instance_uid: str
    modality: str
    body_part: str = ""
    description: str = ""
    number: int | None = None


@dataclass(frozen=True)
class InstanceInfo:
    sop_instance_uid: str
    source_format: str
    modality: str
    rows: int
    columns: int
    frames: int = 1
    samples_per_pixel: int = 1
    bits_stored: int = 8
    photometric: str = ""
    window_center: float | None = None
    window_width: float | None = None
    sop_class_uid: str = ""
    transfer_syntax_uid: str = ""
    number: int | None = None
    source_filename: str = ""  # the uploaded file's own name (app.ingest.service.own_name); "" if it had none


@dataclass(frozen=True)
class Candidate:
    """A checked file: the bytes to store, its preview (PNG; None if it could not be rendered) and its rows.
    PNG/JPEG get their study and series from the upload."""

    filename: str
    data: bytes
    sha256: str
    instance: InstanceInfo
    study: StudyInfo | None
    series: SeriesInfo | None
    preview: bytes | None = None
    body_part: str = ""  # of a PNG/JPEG, as the upload says (a DICOM's is in its series)

    @property
    def source_format(self) -> str:
        return self.instance.source_format


def inspect_file(*, filename: str, data: bytes, modality: str = "") -> Candidate:
    """Check one file (type, header, decodable pixels) and describe it; IngestError names the file. A PNG/JPEG
    gets `modality` ("" until the upload's origin is applied: app/ingest/service.py)."""
    if not data:
        raise IngestError(400, f"{filename}: empty file")
    if data[128:132] == b"DICM":
        return _inspect_dicom(filename=filename, data=data)
    image_format = "png" if data.startswith(PNG_MAGIC) else "jpeg" if data.startswith(JPEG_MAGIC) else ""
    if image_format and filename.lower().endswith(DICOM_SUFFIXES):
        # A name that promises DICOM on a plain image is a mix-up upstream (wrong export); say so, store nothing.
        raise IngestError(
            415, f"{filename}: named as DICOM but holds a {image_format.upper()} image; rename it to upload an image"
        )
    if image_format:
        return _inspect_image(filename=filename, data=data, source_format=image_format, modality=modality)
    if data[:2] in _RAW_DATASET_STARTS:
        return _inspect_dicom(filename=filename, data=to_part10(filename=filename, data=data))
    raise IngestError(415, f"{filename}: not a DICOM file, PNG or JPEG")


def to_part10(*, filename: str, data: bytes) -> bytes:
    """A dataset written without preamble, made a Part 10 file; its own bytes are kept unchanged after it.

    Old exports and some tools write bare datasets. We accept one when it parses with the UIDs we need, and
    prepend the preamble and (if absent) a file meta naming the encoding it was read with, so the blob store
    only holds files that every DICOM reader (and DICOMweb) takes.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise IngestError(415, f"{filename}: not a DICOM file, PNG or JPEG ({pixels.reason_of(exc)})") from exc
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise IngestError(415, f"{filename}: not a DICOM file (no 'DICM' preamble, no SOP UIDs), PNG or JPEG")
    if data[:2] == b"\x02\x00":
        return PART10_PREAMBLE + data  # it has its file meta already
    implicit_vr, little_endian = ds.original_encoding
    syntax = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    if not little_endian:
        syntax = ExplicitVRBigEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    buffer = DicomBytesIO()
    try:
        write_file_meta_info(buffer, meta, enforce_standard=True)
    except Exception as exc:  # invalid UIDs in the dataset make the meta unwritable
        raise IngestError(422, f"{filename}: cannot give this dataset a file meta ({pixels.reason_of(exc)})") from exc
    return PART10_PREAMBLE + buffer.getvalue() + data


def _inspect_dicom(*, filename: str, data: bytes) -> Candidate:
    try:
        ds = pixels.read_dicom(data)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if not syntax:
            raise IngestError(422, f"{filename}: the file meta has no Transfer Syntax UID")
        study_uid = _uid(ds, "StudyInstanceUID", filename=filename)
        series_uid = _uid(ds, "SeriesInstanceUID", filename=filename)
        sop_uid = _uid(ds, "SOPInstanceUID", filename=filename)
        sop_class = _text(ds, "SOPClassUID", 64)
        if sop_class in _NOT_IMAGES:
            raise IngestError(422, f"{filename}: {_NOT_IMAGES[sop_class]} is not an image to read")
        if not pixels.has_pixel_data(ds):
            raise IngestError(422, f"{filename}: no image pixel data")
        first_frame = pixels.check_decodable(ds)
        modality = _text(ds, "Modality", 16).upper() or OTHER_MODALITY
        instance = _instance_info(ds, sop_uid=sop_uid, sop_class=sop_class, syntax=str(syntax), modality=modality)
        study = _study_info(ds, study_uid=study_uid)
        series = SeriesInfo(
            series_instance_uid=series_uid,
            modality=modality,
            body_part=_text(ds, "BodyPartExamined", 64),
            description=_text(ds, "SeriesDescription", 200),
            number=_int(ds, "SeriesNumber"),
        )
    except IngestError:
        raise
    except pixels.PixelDecodeError as exc:
        raise IngestError(422, f"{filename}: {exc}") from exc
    except Exception as exc:  # a corrupt header element raises on first access, whatever its type
        logger.info("refused %s: %r", filename, exc)
        raise IngestError(422, f"{filename}: unreadable DICOM header ({pixels.reason_of(exc)})") from exc
    preview = _preview(first_frame, instance, voi=pixels.frame_voi(ds))
    return Candidate(filename, data, _sha256(data), instance, study, series, preview)


def _instance_info(ds: Dataset, *, sop_uid: str, sop_class: str, syntax: str, modality: str) -> InstanceInfo:
    float_pixels = "PixelData" not in ds  # Float/Double Float Pixel Data: no Bits Stored in the header
    bits_allocated = _int(ds, "BitsAllocated") or 8
    center, width = pixels.header_window(ds)
    return InstanceInfo(
        sop_instance_uid=sop_uid,
        source_format="dicom",
        modality=modality,
        rows=_positive(ds, "Rows"),
        columns=_positive(ds, "Columns"),
        frames=pixels.dataset_frame_count(ds),
        samples_per_pixel=_int(ds, "SamplesPerPixel") or 1,
        bits_stored=bits_allocated if float_pixels else (_int(ds, "BitsStored") or bits_allocated),
        photometric=_text(ds, "PhotometricInterpretation", 32).upper(),
        window_center=center,
        window_width=width,
        sop_class_uid=sop_class,
        transfer_syntax_uid=syntax,
        number=_int(ds, "InstanceNumber"),
    )


def _study_info(ds: Dataset, *, study_uid: str) -> StudyInfo:
    return StudyInfo(
        study_instance_uid=study_uid,
        description=_text(ds, "StudyDescription", 200),
        study_date=_date(ds, "StudyDate"),
        patient_name=_text(ds, "PatientName", 200),
        patient_id=_text(ds, "PatientID", 64),
        patient_birth_date=_date(ds, "PatientBirthDate"),
        accession_number=_text(ds, "AccessionNumber", 64),
    )


def _inspect_image(*, filename: str, data: bytes, source_format: str, modality: str) -> Candidate:
    try:
        array = pixels.load_image(data)
    except pixels.PixelDecodeError as exc:
        raise IngestError(422, f"{filename}: {exc}") from exc
    colour = array.ndim == 3
    bits = 16 if not colour and float(np.max(array, initial=0)) > 255 else 8
    instance = InstanceInfo(
        sop_instance_uid="",  # generated when the upload's study is made
        source_format=source_format,
        modality=modality,
        rows=int(array.shape[0]),
        columns=int(array.shape[1]),
        samples_per_pixel=3 if colour else 1,
        bits_stored=bits,
        photometric="RGB" if colour else "MONOCHROME2",
    )
    return Candidate(filename, data, _sha256(data), instance, None, None, _preview(array, instance))


def _preview(first_frame: np.ndarray, instance: InstanceInfo, voi: grayscale.Voi | None = None) -> bytes | None:
    """The preview as the viewer would render it; None (logged) rather than refuse a file it cannot render."""
    try:
        return previews.render_preview(
            first_frame,
            photometric=instance.photometric,
            window_center=instance.window_center,
            window_width=instance.window_width,
            voi=voi,
        )
    except (ValueError, TypeError, OSError) as exc:
        # The viewer renders it on first request instead, and says why there if it cannot.
        logger.warning("no preview for %s: %s", instance.sop_instance_uid or "an image", pixels.reason_of(exc))
        return None


def _uid(ds: Dataset, keyword: str, *, filename: str) -> str:
    value = _text(ds, keyword, 200)
    if not value:
        raise IngestError(422, f"{filename}: no {keyword} in the header")
    if len(value) > 64 or not _UID.match(value):
        raise IngestError(422, f"{filename}: {keyword} {value[:70]!r} is not a valid UID")
    return value


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    value: Any = ds.get(keyword, "")
    # Postgres refuses NUL in text; DICOM pads with NUL or spaces.
    return str(value if value is not None else "").replace("\x00", "").strip()[:limit]


def _date(ds: Dataset, keyword: str) -> str:
    value = _text(ds, keyword, 16)
    return value if len(value) == 8 and value.isdigit() else ""


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        number = int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    # Integer columns are 32-bit signed.
    return number if number is not None and abs(number) < 2**31 else None


def _positive(ds: Dataset, keyword: str) -> int:
    number = _int(ds, keyword)
    if number is None or number <= 0:
        raise pixels.PixelDecodeError(f"no valid {keyword} in the header")
    return number


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
