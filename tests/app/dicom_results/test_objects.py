"""The DICOM objects of a real prediction on a real chest CR, written to Part 10 bytes and read back with
highdicom's own parsers."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage, ParametricMapStorage, SecondaryCaptureImageStorage
from scipy import ndimage

from app.db import session_scope
from app.dicom_results import objects
from app.dicom_results.service import part10
from app.errors import Invalid
from app.tables import Instance, JobState
from app.viewer import images as viewer_images
from tests.app.dicom_results.conftest import StoredPrediction, store_png_prediction
from tests.app.reading.conftest import fundus_jpeg
from tests.app.viewer import factories
from tests.conftest import FIXTURES

DICOM_FILES = FIXTURES / "dicom"


@pytest.fixture(scope="module")
def written(chest_prediction: StoredPrediction) -> list[bytes]:
    """The objects as Part 10 files: the report, the overlay, the Grad-CAM map, the integrated-gradients map."""
    with session_scope(writes=False) as session:
        return [part10(dataset) for dataset in objects.results_for_prediction(session, chest_prediction.prediction_id)]


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def bilinear_reference(stored: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """The stored map sampled at the centres of the image's pixels (half-pixel aligned), edges clamped."""
    height, width = stored.shape
    ys = (np.arange(rows) + 0.5) * height / rows - 0.5
    xs = (np.arange(columns) + 0.5) * width / columns - 0.5
    grid = np.meshgrid(ys, xs, indexing="ij")
    return ndimage.map_coordinates(stored.astype(np.float64), grid, order=1, mode="nearest")


def test_one_report_one_overlay_and_a_map_per_heatmap_in_the_patients_study(chest_prediction, written) -> None:
    source = chest_prediction.source
    datasets = [read(data) for data in written]
    assert [d.SOPClassUID for d in datasets] == [Comprehensive3DSRStorage, SecondaryCaptureImageStorage,
                                                 ParametricMapStorage, ParametricMapStorage]
    for dataset in datasets:
        assert dataset.StudyInstanceUID == source.StudyInstanceUID
        assert (dataset.PatientName, dataset.PatientID) == (source.PatientName, source.PatientID)
        assert dataset.SeriesInstanceUID != source.SeriesInstanceUID
    sop_uids = {d.SOPInstanceUID for d in datasets}
    series_uids = {d.SeriesInstanceUID for d in datasets}
    assert len(sop_uids) == len(series_uids) == 4 and source.SOPInstanceUID not in sop_uids


def test_the_objects_keep_their_uids_when_made_again(chest_prediction, written) -> None:
    with session_scope(writes=False) as session:
        again = objects.results_for_prediction(session, chest_prediction.prediction_id, methods={"gradcam"})
    first = [read(data) for data in written]
    assert [d.SOPInstanceUID for d in again] == [d.SOPInstanceUID for d in first[:3]]


@pytest.mark.parametrize(("index", "method", "target"), [(2, "gradcam", "abnormal"),
                                                         (3, "integrated_gradients", "normal")])
def test_each_parametric_map_holds_its_heatmap_resampled_onto_the_source(
    chest_prediction, written, index, method, target
) -> None:
    source = chest_prediction.source
    parametric_map = hd.pm.ParametricMap.from_dataset(read(written[index]))
    values = parametric_map.pixel_array.reshape(source.Rows, source.Columns)
    stored = chest_prediction.maps[method].astype(np.float32)
    expected = bilinear_reference(stored, source.Rows, source.Columns)
    assert values.dtype == np.float32
    assert np.allclose(values, expected, rtol=0, atol=1e-5 * float(np.abs(stored).max()))
    assert values.min() == pytest.approx(float(stored.min()), abs=1e-3)  # clamped at the edges: the extremes stay
    assert [str(uid) for _, _, uid in parametric_map.get_source_image_uids()] == [source.SOPInstanceUID]
    mapping = parametric_map.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    words = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated gradients"}[method]
    assert mapping.LUTExplanation == f"{words} attribution for class {target}"
    quantity = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert (quantity.CodingSchemeDesignator, quantity.CodeMeaning) == ("99LUMEN", f"Attribution to class {target}")
    assert parametric_map.SeriesDescription == f"Lumen {method} map ({chest_prediction.model})"
    # A radiograph has no frame of reference: the map gets one of its own, never the source's (it has none).
    assert "FrameOfReferenceUID" not in source and parametric_map.FrameOfReferenceUID


def test_the_report_holds_the_model_the_label_its_probability_uncertainty_and_referral(
    chest_prediction, written
) -> None:
    report = hd.sr.srread(io.BytesIO(written[0]))
    assert isinstance(report, hd.sr.Comprehensive3DSR)
    assert report.SeriesDescription == f"Lumen AI result ({chest_prediction.model})"
    assert isinstance(report.content, hd.sr.MeasurementReport)
    [group] = report.content.get_image_measurement_groups()
    name, version = chest_prediction.model.split(" ")
    items = group[0].ContentSequence
    assert [item.value for item in items.find(codes.DCM.AlgorithmName)] == [name]
    assert [item.value for item in items.find(codes.DCM.AlgorithmVersion)] == [version]
    assert group.finding_type is not None and group.finding_type.meaning == "abnormal"
    measured = {m.name.meaning: m.value for m in group.get_measurements()}
    assert measured == pytest.approx({
        "Probability": 0.83, "Probability of normal": 0.17, "Probability of abnormal": 0.83,
        "Predictive entropy": 0.456, "Mutual information": 0.0123,
    })
    [recommendation] = items.find(codes.DCM.Recommendation)
    assert recommendation.ConceptCodeSequence[0].CodeMeaning == "refer"
    assert len(group.get_qualitative_evaluations(name=codes.DCM.Recommendation)) == 1
    assert [image.referenced_sop_instance_uid for image in group.source_images] == [
        chest_prediction.source.SOPInstanceUID
    ]


def test_the_overlay_is_rgb_the_viewers_image_with_the_grad_cam_over_it(chest_prediction, written) -> None:
    capture = read(written[1])
    source = chest_prediction.source
    assert (capture.PhotometricInterpretation, capture.SamplesPerPixel, capture.BitsAllocated) == ("RGB", 3, 8)
    assert "not for diagnosis" in capture.SeriesDescription and "Grad-CAM" in capture.SeriesDescription
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert list(capture.PatientOrientation) == list(source.PatientOrientation)
    rgb = capture.pixel_array
    assert rgb.shape == (source.Rows, source.Columns, 3)
    with session_scope(writes=False) as session:
        instance = session.get(Instance, chest_prediction.instance_id)
        assert instance is not None
        viewer = np.asarray(viewer_images.Image.open(io.BytesIO(
            viewer_images.instance_png(instance=instance, frame=0, max_size=None))))
    # Grad-CAM (the first of the default methods the prediction has) near zero in the corners: the image as the
    # viewer windows it (MONOCHROME1 inverted), grey; at the blob's peak (0.4 of height and width) the top of jet.
    corner = (slice(-50, None), slice(-50, None))
    assert np.array_equal(rgb[corner][..., 0], viewer[corner]) and np.array_equal(rgb[corner][..., 2], viewer[corner])
    peak = rgb[int(source.Rows * 0.4), int(source.Columns * 0.4)].astype(int)
    assert peak[0] > peak[1] + 60 and peak[0] > peak[2] + 60
    assert viewer.std() > 20  # the image is there, not a flat frame


def test_a_png_uploads_prediction_has_no_dicom_study_to_attach_to() -> None:
    prediction_id = store_png_prediction()
    with session_scope(writes=False) as session, pytest.raises(Invalid, match="uploaded as PNG, not DICOM"):
        objects.results_for_prediction(session, prediction_id)


def test_a_ct_keeps_its_own_frame_of_reference() -> None:
    with session_scope() as session:
        stored = factories.done_study(session)
    _, header = factories.ct_small()
    with session_scope(writes=False) as session:
        results = objects.results_for_prediction(session, stored.prediction_id or 0)
    parametric_map = hd.pm.ParametricMap.from_dataset(read(part10(results[-1])))
    assert parametric_map.FrameOfReferenceUID == header.FrameOfReferenceUID
    assert parametric_map.pixel_array.shape[-2:] == (header.Rows, header.Columns)


def test_no_referral_and_no_mutual_information_where_the_prediction_has_none() -> None:
    with session_scope() as session:
        stored = factories.done_study(session)  # referral False, predictive entropy only
    with session_scope(writes=False) as session:
        report = hd.sr.srread(io.BytesIO(part10(objects.results_for_prediction(session, stored.prediction_id or 0)[0])))
    assert isinstance(report.content, hd.sr.MeasurementReport)
    [group] = report.content.get_image_measurement_groups()
    [recommendation] = group[0].ContentSequence.find(codes.DCM.Recommendation)
    assert recommendation.ConceptCodeSequence[0].CodeMeaning == "no referral"
    assert {m.name.meaning for m in group.get_measurements()} == {
        "Probability", "Probability of normal", "Probability of abnormal", "Predictive entropy",
    }


SOURCES = {
    # A fundus camera's VL photograph (JPEG in DICOM, YBR_FULL_422, no frame of reference, a multi-frame kind).
    "fundus photograph": lambda: factories.photograph_dicom(fundus_jpeg()),
    "palette ultrasound": lambda: (DICOM_FILES / "OBXXXX1A.dcm").read_bytes(),
    "RGB secondary capture": lambda: (DICOM_FILES / "SC_rgb.dcm").read_bytes(),
    "MR (JPEG 2000, in the patient)": lambda: (DICOM_FILES / "MR2_J2KI.dcm").read_bytes(),
}


@pytest.mark.parametrize("kind", list(SOURCES))
def test_other_kinds_of_dicom_image_get_their_objects(kind: str) -> None:
    data = SOURCES[kind]()
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    with session_scope() as session:
        stored = factories.insert_study(session, data=data, source_format="dicom", rows=header.Rows,
                                        columns=header.Columns, modality=str(header.get("Modality", "OT")),
                                        photometric=str(header.PhotometricInterpretation))
        job = factories.add_job(session, stored, state=JobState.done, progress=100)
        prediction, _ = factories.add_prediction(session, job)
        prediction_id = prediction.id
    with session_scope(writes=False) as session:
        made = objects.results_for_prediction(session, prediction_id)
    report, capture, parametric_map = (read(part10(dataset)) for dataset in made)
    assert capture.pixel_array.shape == (header.Rows, header.Columns, 3)
    values = hd.pm.ParametricMap.from_dataset(parametric_map).pixel_array.reshape(header.Rows, header.Columns)
    stored_map = factories.blob_heatmap().astype(np.float32)
    assert np.allclose(values, bilinear_reference(stored_map, header.Rows, header.Columns), atol=1e-5)
    assert [str(uid) for _, _, uid in hd.pm.ParametricMap.from_dataset(parametric_map).get_source_image_uids()] == [
        header.SOPInstanceUID
    ]
    assert {report.StudyInstanceUID, capture.StudyInstanceUID, parametric_map.StudyInstanceUID} == {
        header.StudyInstanceUID
    }
