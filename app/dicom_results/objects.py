"""A stored prediction on a DICOM image as DICOM objects, written with highdicom: one Parametric Map per heatmap,
one Structured Report (TID 1500 Measurement Report) of the prediction, and one Secondary Capture of the image with
a heatmap over it, for archives that do not show Parametric Maps.

Every object keeps the source's Study Instance UID and patient module (highdicom copies them from the source
image), so a PACS files it under the patient's study, and references the source image. Each object is a series of
its own, with a new Series and SOP Instance UID from pydicom's generate_uid, derived from the prediction (and the
heatmap) it carries: a download and a push, or a push sent twice, name the same objects, and a PACS keeps one copy.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Collection
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy.orm import Session

from app.dicom_results import rendering
from app.errors import Invalid, NotFound
from app.ingest import pixels as ingest_pixels
from app.jobs import service as jobs_service
from app.reading import vocabulary
from app.storage import get_blob_store
from app.tables import AiModel, Heatmap, Instance, Prediction
from app.viewer import geometry as viewer_geometry
from app.viewer import images as viewer_images

MANUFACTURER = "Lumen"
# DICOM PS3.16 8.2: a coding scheme of one's own has a designator starting with "99". Its codes name what no
# standard code does: a model's classes (value: the class index; meaning: the label), its uncertainty measures and
# the referral advice. They are read with the algorithm identification beside them (name and version of the model).
LOCAL_SCHEME = "99LUMEN"
# After the modality's own series: the report, the overlay, then the maps in the order of their heatmaps.
REPORT_SERIES, OVERLAY_SERIES, FIRST_MAP_SERIES = 9101, 9102, 9110
REFER = hd.sr.CodedConcept(value="REFER", scheme_designator=LOCAL_SCHEME, meaning="refer")
NO_REFERRAL = hd.sr.CodedConcept(value="NO-REFERRAL", scheme_designator=LOCAL_SCHEME, meaning="no referral")
_LONG_STRING = 64  # DICOM LO: Series Description, Code Meaning, LUT Explanation, Content Description
# Type 2 attributes of the patient and study modules, which highdicom copies from the source image: a conformant
# file has them, empty where unknown; some files leave them out.
_PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                      "ReferringPhysicianName", "StudyID", "AccessionNumber")


@dataclass(frozen=True)
class SourceImage:
    """The stored DICOM image a prediction was made on: `dataset` with its pixels, `header` without (what the
    objects reference and copy the patient and study from)."""

    instance: Instance
    dataset: Dataset
    header: Dataset


def source_image(instance: Instance) -> SourceImage:
    """The instance's file from the blob store, parsed. Invalid for a PNG or JPEG upload, which has no DICOM study
    to attach results to, for a file that does not parse, and for a multi-frame image (not supported yet)."""
    if instance.source_format != "dicom":
        raise Invalid(
            f"instance {instance.id} was uploaded as {instance.source_format.upper()}, not DICOM: it has no DICOM "
            "study (patient, study and image UIDs) for DICOM results to be filed under"
        )
    data = get_blob_store().get(instance.storage_key)
    try:
        header = ingest_pixels.read_dicom(data, stop_before_pixels=True)
        dataset = ingest_pixels.read_dicom(data)
    except ingest_pixels.PixelDecodeError as exc:
        raise Invalid(f"instance {instance.id}: {exc}") from exc
    for keyword in _PATIENT_AND_STUDY:
        if keyword not in header:
            setattr(header, keyword, None)  # empty, as a conformant file has it
    frames = ingest_pixels.dataset_frame_count(header)
    if frames > 1:
        raise Invalid(f"instance {instance.id} has {frames} frames: DICOM results of multi-frame images are not "
                      "supported yet")
    return SourceImage(instance=instance, dataset=dataset, header=header)


def results_for_prediction(
    session: Session, prediction_id: int, *, methods: Collection[str] | None = None
) -> list[Dataset]:
    """The DICOM objects of a stored prediction: its Structured Report, its overlay (when it has a heatmap) and a
    Parametric Map per heatmap, of the methods named only if `methods` is given. NotFound for an unknown
    prediction, Invalid when its image is not a single-frame DICOM image."""
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise NotFound(f"prediction {prediction_id} does not exist")
    source = source_image(prediction.instance)
    heatmaps = [heatmap for heatmap in sorted(prediction.heatmaps, key=lambda h: h.id)
                if methods is None or heatmap.method in methods]
    results: list[Dataset] = [structured_report(source, prediction)]
    shown = overlay_heatmap(prediction.model, heatmaps, target=prediction.label_index)
    if shown is not None:
        results.append(secondary_capture(source, prediction, shown))
    results += [
        parametric_map(source, prediction, heatmap, series_number=FIRST_MAP_SERIES + index)
        for index, heatmap in enumerate(heatmaps)
    ]
    return results


def overlay_heatmap(model: AiModel, heatmaps: list[Heatmap], *, target: int) -> Heatmap | None:
    """The heatmap the overlay shows: of the model's first default method that has one (explaining the predicted
    class if there is one of it), else the first stored; None without heatmaps."""
    order = {method: rank for rank, method in enumerate(jobs_service.served_methods(model))}
    ranked = sorted(heatmaps, key=lambda h: (order.get(h.method, len(order)), h.target_class != target, h.id))
    return ranked[0] if ranked else None


def parametric_map(source: SourceImage, prediction: Prediction, heatmap: Heatmap, *, series_number: int) -> Dataset:
    """The heatmap as float32 values on the source image's grid (`rendering.resample`), unit "no units" (UCUM 1),
    its Real World Value Mapping naming the method in words and coding the class it explains."""
    header = source.header
    values = rendering.resample(viewer_images.heatmap_array(heatmap), rows=header.Rows, columns=header.Columns)
    low, high = float(values.min()), float(values.max())
    model, words = prediction.model, vocabulary.method_label(heatmap.method)
    label = _label(model, heatmap.target_class)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=heatmap.method[:16],
        lut_explanation=_long(f"{words} attribution for class {label}"),
        unit=codes.UCUM.NoUnits,
        value_range=(low, high),
        quantity_definition=_class_code(heatmap.target_class, f"Attribution to class {label}"),
    )
    window = hd.VOILUTTransformation(window_center=(low + high) / 2, window_width=max(high - low, 1e-6))
    return hd.pm.ParametricMap(
        source_images=[_with_geometry(header)],
        pixel_array=values,
        series_instance_uid=_uid("map series", prediction, heatmap.id),
        series_number=series_number,
        sop_instance_uid=_uid("map", prediction, heatmap.id),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model.name,
        software_versions=model.version,
        device_serial_number=model.weights_sha256[:16],
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[window],
        content_label="ATTRIBUTION",
        content_description=_long(f"{words} map of {model.name} {model.version} for class {label}"),
        series_description=_long(f"Lumen {heatmap.method} map ({model.name} {model.version})"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )


def map_method(parametric_map: Dataset) -> str:
    """The method of a map `parametric_map` wrote, from its series description (its LUT label holds 16 characters)."""
    words = str(parametric_map.get("SeriesDescription", "")).split(" ")
    return words[1] if len(words) > 2 and words[0] == "Lumen" and words[2] == "map" else "unknown"


def structured_report(source: SourceImage, prediction: Prediction) -> Dataset:
    """A TID 1500 Measurement Report with one measurement group on the source image: the model as the algorithm
    identification, the predicted label as the group's Finding, its probability (DCM 122157 Probability), the
    probability of every class, predictive entropy and mutual information where present, and the referral
    advice ("refer" or "no referral") as a Recommendation."""
    model = prediction.model
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version, family=codes.DCM.ArtificialIntelligence, manufacturer=MANUFACTURER
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid("tracking", prediction), identifier=f"Lumen prediction {prediction.id}"
        ),
        algorithm_id=algorithm,
        finding_type=_class_code(prediction.label_index, _label(model, prediction.label_index)),
        measurements=_measurements(prediction),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=codes.DCM.Recommendation, value=REFER if prediction.referral
                                        else NO_REFERRAL),
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source.header)],
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["lumen device", model.name, model.version, model.weights_sha256]),
        name=MANUFACTURER, manufacturer_name=MANUFACTURER, model_name=f"{model.name} {model.version}",
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=[group],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[source.header],
        content=report[0],
        series_instance_uid=_uid("report series", prediction),
        series_number=REPORT_SERIES,
        sop_instance_uid=_uid("report", prediction),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model.name,
        software_versions=model.version,
        series_description=_long(f"Lumen AI result ({model.name} {model.version})"),
    )


def _measurements(prediction: Prediction) -> list[hd.sr.Measurement]:
    model, probabilities = prediction.model, prediction.probabilities
    measured = [hd.sr.Measurement(name=codes.DCM.Probability, value=float(probabilities[prediction.label_index]),
                                  unit=codes.UCUM.NoUnits)]
    measured += [
        hd.sr.Measurement(name=_local(f"P{index}", f"Probability of {_label(model, index)}"), value=float(p),
                          unit=codes.UCUM.NoUnits)
        for index, p in enumerate(probabilities)
    ]
    uncertainty = {"ENTROPY": ("Predictive entropy", prediction.predictive_entropy),
                   "MI": ("Mutual information", prediction.mutual_information)}
    measured += [
        hd.sr.Measurement(name=_local(code, meaning), value=float(value), unit=codes.UCUM.NoUnits)
        for code, (meaning, value) in uncertainty.items()
        if value is not None
    ]
    return measured


def secondary_capture(source: SourceImage, prediction: Prediction, heatmap: Heatmap) -> Dataset:
    """The image windowed as the viewer shows it first (the file's VOI, else the instance's window, else the 1st-99th
    percentile; MONOCHROME1 inverted) with the heatmap blended over it (`rendering.overlay`: jet), RGB 8 bit. Its
    series description says what it is and that it is not for diagnosis."""
    instance, header, model = source.instance, source.header, prediction.model
    display = ingest_pixels.to_display(
        ingest_pixels.decode_frame(source.dataset),
        photometric=instance.photometric,
        window_center=instance.window_center,
        window_width=instance.window_width,
        voi=ingest_pixels.frame_voi(source.dataset),
    )
    attribution = rendering.resample(viewer_images.heatmap_array(heatmap), rows=header.Rows, columns=header.Columns)
    edges = viewer_geometry.frame_geometry(header, modality=instance.modality).edges
    # highdicom wants the patient's directions along rows and columns, single letters; an image whose header
    # states none gets them empty, as DICOM's type 2 Patient Orientation allows ("L", "F" are placeholders only).
    orientation = (edges["right"][0], edges["bottom"][0]) if edges else ("L", "F")
    with warnings.catch_warnings():
        # The source's names as they are (a referring physician "ward"): highdicom's doubts about them are not ours.
        warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
        capture = _capture(source, prediction, heatmap, pixels=rendering.overlay(np.asarray(display), attribution),
                           orientation=orientation)
    if not edges:
        capture.PatientOrientation = []
    capture.BurnedInAnnotation = "NO"
    capture.DerivationDescription = _long(f"{heatmap.method} heatmap of {model.name} {model.version} over the image")
    capture.SourceImageSequence = [_reference(header)]
    return capture


def _capture(
    source: SourceImage, prediction: Prediction, heatmap: Heatmap, *, pixels: np.ndarray, orientation: tuple[str, str]
) -> Dataset:
    model = prediction.model
    return hd.sc.SCImage.from_ref_dataset(
        source.header,
        pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=_uid("overlay series", prediction, heatmap.id),
        series_number=OVERLAY_SERIES,
        sop_instance_uid=_uid("overlay", prediction, heatmap.id),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=orientation,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=_long(f"Lumen overlay, not for diagnosis: {vocabulary.method_label(heatmap.method)} "
                                 f"({model.name} {model.version})"),
    )


def _with_geometry(header: Dataset) -> Dataset:
    """The header as a Parametric Map's source: as it is when it places the image in the patient (cross-sections);
    else (a projection radiograph, a photograph) a copy placed in a frame of reference of its own, derived from the
    image, in which the map lies pixel on pixel over it (position 0, rows and columns along x and y, the image's
    pixel spacing or 1 mm): the Parametric Map IOD requires a frame of reference and a plane position, which such
    an image does not have. The map still references the source image as it is."""
    if hd.spatial.get_image_coordinate_system(header) is not None:
        return header
    placed = copy.deepcopy(header)
    placed.FrameOfReferenceUID = generate_uid(entropy_srcs=["lumen frame of reference", header.SOPInstanceUID])
    position, orientation, measures = Dataset(), Dataset(), Dataset()
    position.ImagePositionPatient = placed.ImagePositionPatient = [0.0, 0.0, 0.0]
    orientation.ImageOrientationPatient = placed.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    measures.PixelSpacing = placed.PixelSpacing = list(viewer_geometry.frame_geometry(header).spacing or (1.0, 1.0))
    measures.SliceThickness = placed.SliceThickness = placed.get("SliceThickness") or 1.0
    # The same as functional groups, where highdicom reads them for a kind of image that may have several frames
    # (a VL photograph: a fundus camera's).
    shared, frame = Dataset(), Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    frame.PlanePositionSequence = [position]
    placed.SharedFunctionalGroupsSequence, placed.PerFrameFunctionalGroupsSequence = [shared], [frame]
    return placed


def _reference(header: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return item


def _uid(kind: str, prediction: Prediction, *more: object) -> str:
    """A UID of this object of this prediction: the same every time it is made, different for any other."""
    parts = ["lumen", kind, prediction.instance.sop_instance_uid, prediction.id, prediction.created_at.isoformat()]
    return generate_uid(entropy_srcs=[str(part) for part in [*parts, *more]])


def _label(model: AiModel, index: int) -> str:
    labels = list(model.labels or [])
    return str(labels[index]) if 0 <= index < len(labels) else f"class {index}"


def _class_code(index: int, meaning: str) -> hd.sr.CodedConcept:
    return _local(str(index), meaning)


def _local(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=_long(meaning))


def _long(text: str) -> str:
    """Text cut to what a DICOM LO element holds."""
    return text if len(text) <= _LONG_STRING else text[: _LONG_STRING - 3] + "..."
