"""In a real browser, the viewer's compressed transport: a JPEG 2000 radiograph's frame, sent as its stored
codestream and decoded in a worker by the vendored OpenJPEG WebAssembly under the page's Content-Security-Policy
(app/viewer/jpeg2000.py), is the raw frame value for value in a tenth of the bytes; the fundus DICOM's stored JPEG
is what the viewer fetches and paints.

Same harness as the other browser tests (tests/e2e/conftest.py): the app under uvicorn in a thread, Chromium.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
import pytest

from tests.app.viewer import factories
from tests.conftest import FIXTURES
from tests.e2e.helpers import fresh_dicom
from tests.e2e.test_browser_viewer import _open, _upload

pytestmark = pytest.mark.browser

# The viewer's decoded frame against the raw route's values, and the bytes each form took on the wire.
COMPARE_WITH_RAW = """async () => {
    const { fetchRaw } = await import('/static/viewer.js');
    const viewport = window.lumen.viewport;
    const id = viewport.instance.id;
    const { meta, buffer } = await fetchRaw(`/api/instances/${id}/pixels?frame=0`);
    const raw = new Uint16Array(buffer, 0, meta.rows * meta.columns);
    const shown = viewport.entry.data;
    let differing = 0;
    for (let i = 0; i < raw.length; i += 1) if (raw[i] !== shown[i]) differing += 1;
    const sizes = (test) => performance.getEntriesByType('resource')
        .filter((entry) => test(entry.name.replace(location.origin, '')))
        .map((entry) => entry.encodedBodySize);
    const pixels = `/api/instances/${id}/pixels?frame=0`;
    const tail = new Uint8Array(buffer, 2 * raw.length);
    const kept = new Uint8Array(shown.buffer, 2 * raw.length, tail.length);
    return { count: raw.length, shownCount: shown.length, differing, distinct: new Set(shown).size,
             encoding: viewport.entry.meta.encoding, tailSame: kept.every((byte, i) => byte === tail[i]),
             compressed: sizes((url) => url.startsWith(`${pixels}&encoding=`)), raw: sizes((url) => url === pixels) };
}"""
# The full image's transfer and the canvas's centre: a painted photograph is not black.
FULL_IMAGE = """(id) => {
    const entries = performance.getEntriesByType('resource').filter((e) => e.name.includes(`/api/instances/${id}/`));
    const c = document.getElementById('image-canvas');
    const d = c.getContext('2d').getImageData(c.width / 2 - 20, c.height / 2 - 20, 40, 40).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
    const entry = window.lumen.viewport.entry;
    return { urls: entries.map((e) => [e.name.replace(location.origin, ''), e.encodedBodySize]),
             mean: sum / (d.length / 4) / 3, width: entry.base.width, height: entry.base.height };
}"""


@pytest.mark.parametrize(
    ("path", "size", "distinct"),
    [
        (FIXTURES / "dicom" / "RG1_J2KI.dcm", 1955 * 1841, 10_000),  # 15-bit, lossy, MONOCHROME1
        (Path(pydicom.data.get_testdata_file("693_J2KI.dcm")), 512 * 512, 1_000),  # signed CT, intercept -1024
    ],
    ids=["RG1", "signed-CT"],
)
def test_the_viewer_decodes_a_jpeg2000_frame_value_for_value(server, browser, make_user, path, size, distinct):
    _, token = make_user("coordinator")
    study = _upload(server, token, path.name, fresh_dicom(path))
    reader, _ = make_user("reader")
    console: list[str] = []
    page, errors = _open(browser, server, reader, study_id=study["id"], mark="full-image", console=console)
    result = page.evaluate(COMPARE_WITH_RAW)
    assert result["count"] == result["shownCount"] == size
    assert result["encoding"] == "jpeg2000"
    assert result["differing"] == 0 and result["tailSame"]
    assert result["distinct"] > distinct  # a real image's values, not a constant
    assert len(result["compressed"]) == 1 and len(result["raw"]) == 1
    assert result["raw"][0] >= 2 * size  # the raw body: the pixels, then any VOI LUT tables
    assert result["compressed"][0] < 0.5 * result["raw"][0]
    assert not errors and not [message for message in console if "Content Security Policy" in message]
    page.close()


def test_the_viewer_paints_the_fundus_dicom_from_its_stored_jpeg(server, browser, make_user):
    _, token = make_user("coordinator")
    jpeg = factories.pristine_idrid_01()
    study = _upload(server, token, "fundus.dcm", factories.photograph_dicom(jpeg))
    instance_id = study["instances"][0]["id"]
    reader, reader_token = make_user("reader")
    page, errors = _open(browser, server, reader, study_id=study["id"], mark="full-image")
    result = page.evaluate(FULL_IMAGE, instance_id)
    assert [f"/api/instances/{instance_id}/image?frame=0", len(jpeg)] in result["urls"]
    assert not any("image.png?frame" in url for url, _ in result["urls"])  # no full PNG made or sent
    assert (result["width"], result["height"]) == (4288, 2848)
    assert result["mean"] > 20  # the fundus, not the black stage
    auth = {"Authorization": f"Bearer {reader_token}"}
    served = httpx.get(f"{server}/api/instances/{instance_id}/image", headers=auth)
    assert served.content == jpeg
    assert not errors
    page.close()
