"""The viewer's tools in a real browser: a length drawn on the radiograph reads the mm its header's spacing gives;
rectangle and ellipse ROIs on a CT read the mean, SD, min and max (HU) that numpy computes on the same pixels of
the file as pydicom decodes it; the orientation letters are the header's; the preset selector says "Custom" after
a window drag; the overlay names the patient in a clinical read and only the case pseudonym in a reader study.

Same harness as the other browser tests (tests/e2e/conftest.py): the app under uvicorn in a thread, Chromium.
"""

from __future__ import annotations

import io
import math
import re
import secrets

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import generate_uid

from tests.conftest import FIXTURES
from tests.e2e.helpers import sign_in
from tests.e2e.test_browser_viewer import _open, _upload

pytestmark = pytest.mark.browser

ITEMS = "() => window.lumen.viewport.measure.items()"
# Where the image lies in the stage (CSS px) and the stage's box in the page.
PLACEMENT = """() => {
    const v = window.lumen.viewport;
    const box = v.stage.getBoundingClientRect();
    return { left: box.left, top: box.top, width: box.width, height: box.height, columns: v.width, rows: v.height };
}"""
# Alpha of the measurement layer around a point of the image (3 x 3 device pixels at its place on the stage).
LAYER_ALPHA = """([x, y]) => {
    const v = window.lumen.viewport;
    const at = v.toStage({ x, y });
    const dpr = window.devicePixelRatio || 1;
    const canvas = document.getElementById('measure-canvas');
    const [left, top] = [Math.round(at.x * dpr) - 1, Math.round(at.y * dpr) - 1];
    const data = canvas.getContext('2d').getImageData(left, top, 3, 3).data;
    return Math.max(...data.filter((_, i) => i % 4 === 3));
}"""


def _dicom(name: str, **attributes) -> tuple[bytes, pydicom.Dataset]:
    """A fixture with new UIDs and these attributes set (None deletes one); the bytes and the dataset saved."""
    ds = pydicom.dcmread(FIXTURES / "dicom" / name)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _expected_point(place: dict, x: float, y: float) -> tuple[float, float]:
    """The image point under a page point at the fitted view: the image centred, scaled to fit the stage."""
    scale = min(place["width"] / place["columns"], place["height"] / place["rows"])
    left = place["left"] + (place["width"] - place["columns"] * scale) / 2
    top = place["top"] + (place["height"] - place["rows"] * scale) / 2
    return (x - left) / scale, (y - top) / scale


def _drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    page.mouse.up()


def _number(text: str, label: str) -> float:
    match = re.search(rf"{label} (-?[\d.]+)", text)
    assert match, (label, text)
    return float(match.group(1))


def test_a_length_on_the_radiograph_reads_the_mm_of_its_header_spacing(server, browser, make_user):
    # RG1's own PixelSpacing is 0\0 (no spacing: the viewer would say px); a CR plate states ImagerPixelSpacing,
    # here different between rows and columns so that swapping them shows.
    data, ds = _dicom("RG1_J2KI.dcm", PixelSpacing=None, ImagerPixelSpacing=[0.168, 0.143])
    _, token = make_user("coordinator")
    study = _upload(server, token, "rg1.dcm", data)
    reader, _ = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=study["id"], mark="full-image")
    page.wait_for_function("() => window.lumen.viewport.entry?.meta?.spacing")
    page.keyboard.press("l")
    assert page.get_attribute('.tool[data-tool="length"]', "aria-pressed") == "true"
    place = page.evaluate(PLACEMENT)
    start = (place["left"] + 0.30 * place["width"], place["top"] + 0.25 * place["height"])
    end = (place["left"] + 0.62 * place["width"], place["top"] + 0.80 * place["height"])
    _drag(page, start, end)

    [item] = page.evaluate(ITEMS)
    a, b = item["points"]
    for point, (x, y) in ((a, start), (b, end)):
        ex, ey = _expected_point(place, x, y)
        assert abs(point["x"] - ex) < 0.02 and abs(point["y"] - ey) < 0.02, (point, ex, ey)
    row_spacing, column_spacing = (float(v) for v in ds.ImagerPixelSpacing)
    mm = math.hypot((b["x"] - a["x"]) * column_spacing, (b["y"] - a["y"]) * row_spacing)
    assert mm > 50  # a long line on a 27 x 31 cm plate
    assert item["values"]["unit"] == "mm" and item["values"]["length"] == pytest.approx(mm, rel=1e-12)
    readout = page.text_content("#measure-readout")
    assert readout.endswith(" mm (detector)")
    assert abs(float(readout.split()[0]) - mm) <= 0.05 + 1e-9, (readout, mm)
    assert page.evaluate(LAYER_ALPHA, [(a["x"] + b["x"]) / 2, (a["y"] + b["y"]) / 2]) > 0  # drawn

    # Zoom and pan move the line with the image; its numbers stay.
    page.keyboard.press("+")
    page.mouse.move(place["left"] + 40, place["top"] + 40)
    page.mouse.down(button="middle")
    page.mouse.move(place["left"] + 120, place["top"] + 90, steps=4)
    page.mouse.up(button="middle")
    assert page.evaluate("() => window.lumen.viewport.panX") == 80
    assert page.evaluate(ITEMS) == [item]
    assert page.evaluate(LAYER_ALPHA, [(a["x"] + b["x"]) / 2, (a["y"] + b["y"]) / 2]) > 0

    # The header's orientation (PatientOrientation L\F) on the edges.
    edges = {edge: page.text_content(f"#orient-{edge}") for edge in ("top", "bottom", "left", "right")}
    assert edges == {"top": "H", "bottom": "F", "left": "R", "right": "L"}

    page.keyboard.press("Delete")
    assert page.evaluate(ITEMS) == []
    assert page.evaluate(LAYER_ALPHA, [(a["x"] + b["x"]) / 2, (a["y"] + b["y"]) / 2]) == 0

    # An angle: three clicks (end, vertex, end), measured in the patient (the spacing differs between axes).
    page.keyboard.press("n")
    for fx, fy in ((0.35, 0.30), (0.50, 0.55), (0.70, 0.40)):
        page.mouse.click(place["left"] + fx * place["width"], place["top"] + fy * place["height"])
    [angle] = page.evaluate(ITEMS)
    end, vertex, other = (np.array([p["x"] * column_spacing, p["y"] * row_spacing]) for p in angle["points"])
    u, v = end - vertex, other - vertex
    degrees = math.degrees(math.acos(float(u @ v) / float(np.linalg.norm(u) * np.linalg.norm(v))))
    assert angle["values"]["degrees"] == pytest.approx(degrees, rel=1e-9)
    assert abs(float(page.text_content("#measure-readout").rstrip("°")) - degrees) <= 0.05 + 1e-9
    assert not errors
    page.close()


def _region(values: np.ndarray, kind: str, a: dict, b: dict) -> np.ndarray:
    """The values of the pixels whose centres lie inside the shape spanned by a and b (or on its edge)."""
    rows, columns = np.mgrid[0 : values.shape[0], 0 : values.shape[1]] + 0.5
    x0, x1 = sorted((a["x"], b["x"]))
    y0, y1 = sorted((a["y"], b["y"]))
    if kind == "rect":
        inside = (columns >= x0) & (columns <= x1) & (rows >= y0) & (rows <= y1)
    else:
        u = (columns - (x0 + x1) / 2) / ((x1 - x0) / 2)
        v = (rows - (y0 + y1) / 2) / ((y1 - y0) / 2)
        inside = u * u + v * v <= 1
    return values[inside]


def test_roi_statistics_are_numpys_on_the_same_hounsfield_values(server, browser, make_user):
    data, ds = _dicom("bad_sequence.dcm")
    hounsfield = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    _, token = make_user("coordinator")
    study = _upload(server, token, "ct.dcm", data)
    reader, _ = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=study["id"], mark="full-image")
    place = page.evaluate(PLACEMENT)

    def at(fx: float, fy: float) -> tuple[float, float]:
        return place["left"] + fx * place["width"], place["top"] + fy * place["height"]

    page.keyboard.press("b")
    _drag(page, at(0.35, 0.30), at(0.55, 0.52))
    page.keyboard.press("e")
    _drag(page, at(0.45, 0.45), at(0.70, 0.62))
    items = page.evaluate(ITEMS)
    assert [item["kind"] for item in items] == ["rect", "ellipse"]
    for item in items:
        region = _region(hounsfield, item["kind"], *item["points"])
        values = item["values"]
        assert values["n"] == region.size > 500
        assert values["mean"] == pytest.approx(region.mean(), rel=1e-9, abs=1e-9)
        assert values["sd"] == pytest.approx(region.std(), rel=1e-9)  # population SD (ddof 0)
        assert (values["min"], values["max"]) == (region.min(), region.max())
        assert values["units"] == "HU"
        spacing = [float(v) for v in ds.PixelSpacing]
        (a, b) = item["points"]
        area = abs(b["x"] - a["x"]) * spacing[1] * abs(b["y"] - a["y"]) * spacing[0]
        assert values["area"] == pytest.approx(area * (math.pi / 4 if item["kind"] == "ellipse" else 1))
        text = " · ".join(item["lines"])
        assert abs(_number(text, "Mean") - region.mean()) <= 0.05 + 1e-9
        assert abs(_number(text, "SD") - region.std()) <= 0.05 + 1e-9
        assert "HU" in text and "mm²" in text
    assert page.text_content("#measure-readout") == " · ".join(items[-1]["lines"])

    # The axial CT's letters: rows run to the patient's left, columns to posterior.
    assert page.text_content("#orient-top") == "A" and page.text_content("#orient-left") == "R"
    page.click("#measure-clear")
    assert page.evaluate(ITEMS) == []
    assert not errors
    page.close()


SELECTED_PRESET = "() => { const s = document.getElementById('preset'); return s.options[s.selectedIndex].text; }"


def test_the_preset_selector_says_custom_after_a_window_drag(server, browser, make_user):
    data, _ = _dicom("bad_sequence.dcm")
    _, token = make_user("coordinator")
    study = _upload(server, token, "ct.dcm", data)
    reader, _ = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=study["id"], mark="full-image")
    page.wait_for_function("() => document.getElementById('preset').options.length > 2")
    first = page.evaluate(SELECTED_PRESET)
    assert first.startswith("1 · ")
    place = page.evaluate(PLACEMENT)
    page.keyboard.press("w")
    centre = (place["left"] + place["width"] / 2, place["top"] + place["height"] / 2)
    _drag(page, centre, (centre[0] + 60, centre[1] + 40))
    page.wait_for_function("() => window.lumen.viewport.presetKey === null")
    page.wait_for_function(f"() => ({SELECTED_PRESET})() === 'Custom'")
    page.select_option("#preset", "2")
    page.wait_for_function("() => window.lumen.viewport.presetKey === 2")
    # The selector is redrawn on the next animation frame: wait for it rather than read it at once.
    page.wait_for_function(f"() => ({SELECTED_PRESET})().startsWith('2 · ')")
    page.wait_for_function("() => ![...document.querySelectorAll('#preset option')].some(o => o.text === 'Custom')")
    _drag(page, centre, (centre[0] - 50, centre[1]))
    page.wait_for_function("() => window.lumen.viewport.presetKey === null")
    page.wait_for_function(f"() => ({SELECTED_PRESET})() === 'Custom'")
    page.keyboard.press("1")
    page.wait_for_function("() => window.lumen.viewport.presetKey === 1")
    page.wait_for_function(f"(first) => ({SELECTED_PRESET})() === first", arg=first)
    assert not errors
    page.close()


def test_the_overlay_names_the_patient_in_a_clinical_read_and_only_the_case_in_a_reader_study(
    server, browser, make_user
):
    token_hex = secrets.token_hex(4)
    name, patient_id = f"MEASUREPROBE{token_hex}^ANNA", f"MPID{token_hex}"
    data, ds = _dicom("RG1_J2KI.dcm", PatientName=name, PatientID=patient_id)  # a chest film: a finding study's
    coordinator, token = make_user("coordinator")
    api = {"Authorization": f"Bearer {token}"}
    study = _upload(server, token, "rg1.dcm", data)
    date = f"{ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}"  # as the app shows DICOM DA

    # A coordinator's clinical read: name, ID, study date and modality, legible over the image.
    page, errors = _open(browser, server, coordinator, study_id=study["id"], mark="full-image")
    line = page.text_content("#hud-patient").strip()
    assert line == f"{name} · {patient_id} · {date} · CR"
    shadow = page.evaluate("() => getComputedStyle(document.getElementById('hud-patient')).textShadow")
    assert shadow.count("rgb(0, 0, 0)") >= 4  # an outline on every side, not one soft shadow
    page.close()

    # A reader's clinical read: their role sees the patient's pseudonym, never the name or ID.
    reader, _ = make_user("reader")
    page, errors_reader = _open(browser, server, reader, study_id=study["id"], mark="full-image")
    line = page.text_content("#hud-patient").strip()
    assert re.fullmatch(rf"P-[0-9a-f]{{8}} · {date} · CR", line), line
    pseudonym = line.split(" · ")[0]
    assert name.split("^")[0] not in page.content() and patient_id not in page.content()
    page.close()

    # The same study as a reader-study case: the case pseudonym only.
    created = httpx.post(
        f"{server}/api/reader-studies",
        headers=api,
        json={
            "name": f"measure overlay {token_hex}",
            "task": "binary_finding",
            "finding": "effusion",
            "scheme": "counterbalanced",
            "conditions": [{"key": "unaided", "kind": "unassisted"}],
            "seed": 1,
        },
    )
    assert created.status_code in (200, 201), created.text
    sid = created.json()["id"]
    csv = f"study_instance_uid,finding\n{ds.StudyInstanceUID},present\n"
    for url, kwargs in (
        (f"/api/reader-studies/{sid}/reference", {"content": csv, "headers": {**api, "Content-Type": "text/csv"}}),
        (f"/api/reader-studies/{sid}/readers", {"json": {"emails": [reader.email]}, "headers": api}),
        (f"/api/reader-studies/{sid}/open", {"json": {}, "headers": api}),
    ):
        response = httpx.post(server + url, timeout=30, **kwargs)
        assert response.status_code == 200, response.text
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, server, reader.email)
    page.goto(f"{server}/reader-studies")
    page.click("#my-studies a.button-primary")
    page.wait_for_url(f"{server}/assignments/*/read")
    page.wait_for_function("() => performance.getEntriesByName('lumen:full-image').length > 0", timeout=30_000)
    case = page.evaluate("() => JSON.parse(document.getElementById('reading-data').textContent).assignment.case")
    assert re.fullmatch(r"C\d+", case), case
    assert page.text_content("#hud-patient").strip() == f"Case {case} · CR"
    content = page.content()
    for needle in (name.split("^")[0], patient_id, ds.StudyDate, date, pseudonym):
        assert needle not in content, needle
    assert not errors and not errors_reader
    page.close()
