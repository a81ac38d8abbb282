"""JPEG 2000 frames in a real browser: the reading room asks for the stored codestream, decodes it in a worker
with the vendored OpenJPEG WebAssembly (app/static/vendor/openjpeg) under the page's Content-Security-Policy, and
holds exactly the raw values the server decodes, in a fraction of the bytes.

Same harness as test_browser_reading.py: the app under uvicorn in a thread, Debian's Chromium via Playwright.
"""

from __future__ import annotations

import httpx
import pytest

from tests.app.auth.helpers import PASSWORD
from tests.conftest import FIXTURES
from tests.e2e.helpers import fresh_dicom

pytestmark = pytest.mark.browser

# The viewer's values against the raw form's, all of them, and what crossed the wire for the frame.
_COMPARE = """async (id) => {
    const response = await fetch(`/api/instances/${id}/pixels?frame=0`);
    const meta = JSON.parse(response.headers.get('X-Lumen-Meta'));
    const raw = new Uint8Array(await response.arrayBuffer());
    const entry = window.lumen.viewport.entry;
    const count = meta.rows * meta.columns;
    const expected = new Uint16Array(raw.buffer, 0, count);
    let differing = 0;
    for (let i = 0; i < count; i += 1) if (entry.data[i] !== expected[i]) differing += 1;
    const tail = raw.subarray(2 * count);
    const kept = new Uint8Array(entry.data.buffer, 2 * count, tail.length);
    const sent = performance.getEntriesByType('resource').find((e) => e.name.includes('encoding=jpeg2000'));
    return {encoding: entry.meta.encoding, differing, count, tailSame: kept.every((b, i) => b === tail[i]),
            rawBytes: raw.length, sentBytes: sent.encodedBodySize};
}"""


@pytest.mark.parametrize("name", ["RG1_J2KI.dcm", "693_J2KI.dcm"])
def test_a_jpeg2000_frame_is_decoded_in_the_browser_to_the_servers_values(server, browser, make_user, name):
    _, token = make_user("coordinator")
    path = FIXTURES / "dicom" / name
    if not path.is_file():  # pydicom's own test file: signed CT samples with an intercept of -1024
        import pydicom

        path = pydicom.data.get_testdata_file(name)
    upload = httpx.post(f"{server}/api/studies", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                        files={"files": (name, fresh_dicom(path))})
    assert upload.status_code == 201, upload.text
    study, instance = upload.json()["id"], upload.json()["instances"][0]["id"]
    reader, _ = make_user("reader")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: "Content Security Policy" in message.text and problems.append(message.text))
    page.goto(f"{server}/login")
    page.fill('input[name="email"]', reader.email)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{server}/")
    page.goto(f"{server}/studies/{study}/read")
    page.wait_for_function("() => performance.getEntriesByName('lumen:full-image').length > 0", timeout=30_000)
    seen = page.evaluate(_COMPARE, instance)
    assert seen["encoding"] == "jpeg2000"
    assert seen["differing"] == 0 and seen["count"] > 0 and seen["tailSame"]
    assert seen["sentBytes"] < 0.5 * seen["rawBytes"], seen
    assert problems == []
    context.close()
