"""Reading-room timings in a real browser (a benchmark, not a timed test); writes reports/browser-timings.md (or --out).

Measured with the Performance API inside Chromium, from navigation start:
- first image: the first frame presented with the image on the canvas (the 512-px preview, or full data if first);
- full image: the full-resolution raw data windowed and presented;
- overlay: the first heatmap presented over the image;
- assistance toggle (key A): the handler plus style and layout, and the time to the next presented frame.

Cases: the radiograph RG1_J2KI.dcm as it is (1955 x 1841, JPEG 2000); a 2048-px radiograph made from it by
upscaling it to 2048 x 1929 (bilinear) and re-encoding it as JPEG 2000 lossless, like the original; a fundus
photograph (IDRiD_02.jpg re-encoded at 2048 px); and the 4288 x 2848 fundus DICOM: the pristine IDRiD_01.jpg
wrapped unchanged as an Ophthalmic Photography DICOM (JPEG baseline, OP, EYE). All are stored through the real
ingest (which makes the 512-px preview). Each page load starts with the server's decoded-frame cache emptied and a
fresh browser context (cold); the compressed frame the first load made is kept (a derived blob), as it would be
for the next reader. Also measured: the bytes of the full-resolution response, and of the form sent before
(raw uint16, full PNG) fetched once more from the page.

Run: .venv/bin/python bench/browser_timings.py [--repeats 5] [--data-dir DATA] (DATA/idrid/pristine/IDRiD_01.jpg;
without it the same JPEG stream, from demo/IDRiD_01_OP_jpegbaseline.dcm)
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import secrets
import statistics
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The embedded default (SQLite in a temporary folder): the benchmark needs no server of its own.
os.environ.pop("DATABASE_URL", None)
os.environ["LUMEN_DATA_DIR"] = tempfile.mkdtemp(prefix="lumen-bench-")
os.environ["LUMEN_ENV"] = "test"

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import uvicorn  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.uid import JPEG2000Lossless, generate_uid  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
HISTORY = "## History"
PASSWORD = "benchmark password 123"
TOGGLE_JS = """async () => {
  const t0 = performance.now();
  document.dispatchEvent(new KeyboardEvent("keydown", { key: "a", bubbles: true }));
  void document.body.offsetHeight;
  document.getElementById("stage").getBoundingClientRect();
  const work = performance.now() - t0;
  await new Promise((resolve) => requestAnimationFrame(() => {
    const channel = new MessageChannel();
    channel.port1.onmessage = resolve;
    channel.port2.postMessage(null);
  }));
  return { work, frame: performance.now() - t0 };
}"""


# The full-resolution response's bytes on the wire, and those of the form sent before this change, fetched again.
WIRE_JS = """async () => {
  const viewport = window.lumen.viewport;
  const base = `/api/instances/${viewport.instance.id}/`;
  const full = viewport.instance.colour ? `${base}image?frame=0` : `${base}pixels?frame=0&encoding=`;
  const entry = performance.getEntriesByType("resource").find((e) => e.name.includes(full));
  const before = viewport.instance.colour ? `${base}image.png?frame=0` : `${base}pixels?frame=0`;
  const body = await (await fetch(before)).arrayBuffer();
  return { sent: entry.encodedBodySize, before: body.byteLength };
}"""


def radiograph_2048() -> bytes:
    ds = pydicom.dcmread(ROOT / "tests" / "fixtures" / "dicom" / "RG1_J2KI.dcm")
    pixels = ds.pixel_array
    upscaled = np.asarray(Image.fromarray(pixels.astype(np.int32)).resize((1929, 2048), Image.Resampling.BILINEAR))
    ds.Rows, ds.Columns = 2048, 1929
    ds.compress(JPEG2000Lossless, upscaled.astype(pixels.dtype), encoding_plugin="pylibjpeg")
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def fundus_2048() -> bytes:
    image = Image.open(ROOT / "demo" / "IDRiD_02.jpg").convert("RGB")
    image.thumbnail((2048, 2048))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def radiograph_rg1() -> bytes:
    from tests.e2e.helpers import fresh_dicom

    return fresh_dicom(ROOT / "tests" / "fixtures" / "dicom" / "RG1_J2KI.dcm")


def fundus_4288(data_dir: Path | None) -> bytes:
    from tests.app.viewer import factories

    return factories.photograph_dicom(factories.pristine_idrid_01(data_dir))


def arrange(data_dir: Path | None) -> tuple[str, dict[str, int]]:
    """A reader, the studies (through the real ingest), each with a prediction and two heatmaps (256 px)."""
    from app.auth import service as auth_service
    from app.db import session_scope
    from app.ingest import service as ingest_service
    from app.migrations import upgrade
    from app.tables import Role
    from tests.app.reading.conftest import add_heatmap
    from tests.app.viewer import factories

    upgrade("head")
    email = f"bench-{secrets.token_hex(3)}@example.org"
    studies = {}
    with session_scope() as session:
        auth_service.create_user(session, email=email, password=PASSWORD, role=Role.reader)
        cases = {
            "radiograph_rg1": ("rg1.dcm", radiograph_rg1()),
            "radiograph": ("radiograph.dcm", radiograph_2048()),
            "fundus": ("fundus.jpg", fundus_2048()),
            "fundus_4288": ("fundus.dcm", fundus_4288(data_dir)),
        }
        y, x = np.mgrid[0:256, 0:256].astype(np.float32)
        blob = np.exp(-(((y - 110) / 40) ** 2 + ((x - 150) / 50) ** 2))
        for name, (filename, data) in cases.items():
            result = ingest_service.ingest(session, uploads=[ingest_service.Upload(filename, data)], user_id=None)
            outcome = result.studies[0]
            stored = factories.StoredStudy(outcome.study.id, outcome.instances[0][0].id)
            job = factories.add_job(session, stored, state=factories.JobState.done, progress=100)
            prediction, _ = factories.add_prediction(session, job)
            add_heatmap(session, prediction.id, method="integrated_gradients", array=blob - 0.3)
            studies[name] = stored.study_id
    return email, studies


# Cases measured a second time with the viewer's pixel requests rewritten to the form sent before the JPEG 2000
# codestream was (the same run, the same studies): what the smaller transfer costs in decode time.
DEFLATED = {"radiograph_rg1", "radiograph"}
DEFLATE_SUFFIX = " (deflated, as before)"


def measure(browser, server: str, email: str, study_id: int, *, deflated: bool = False) -> dict[str, float]:
    from app.viewer import frames

    frames.clear_cache()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    if deflated:
        page.route("**/pixels?*encoding=jpeg2000*", lambda route: route.continue_(
            url=route.request.url.replace("encoding=jpeg2000", "encoding=up-zigzag-shuffle-deflate")))
    page.goto(f"{server}/login")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_load_state()
    assert "/login" not in page.url, "sign-in failed"
    page.goto(f"{server}/studies/{study_id}/read")
    page.wait_for_function(
        "() => ['full-image', 'overlay'].every((n) => performance.getEntriesByName('lumen:' + n).length)",
        timeout=60_000,
    )
    marks = page.evaluate(
        "() => Object.fromEntries(performance.getEntriesByType('mark').map((m) => [m.name, m.startTime]))"
    )
    wire = page.evaluate(WIRE_JS)
    toggles = [page.evaluate(TOGGLE_JS) for _ in range(6)]
    context.close()
    return {
        "first_image": marks["lumen:first-image"],
        "full_image": marks["lumen:full-image"],
        "overlay": marks["lumen:overlay"],
        "toggle_work": statistics.median(t["work"] for t in toggles),
        "toggle_frame": statistics.median(t["frame"] for t in toggles),
        "full_bytes": wire["sent"],
        "before_bytes": wire["before"],
    }


def report(results: dict[str, list[dict[str, float]]], repeats: int, load: tuple[float, float], history: str) -> str:
    def median(case: str, key: str) -> str:
        return f"{statistics.median(run[key] for run in results[case]):.0f}" if key != "toggle_work" else \
            f"{statistics.median(run[key] for run in results[case]):.1f}"

    lines = [
        "# Browser timings of the reading room",
        "",
        f"Measured by `bench/browser_timings.py` on {datetime.now(UTC):%Y-%m-%d} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs shared, headless Chromium, app under uvicorn on loopback, embedded SQLite).",
        f"Medians of {repeats} cold page loads (server frame cache emptied, new browser context), in ms from",
        "navigation start; the toggle is the median of 6 presses of `A` per load.",
        f"Load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f}; the benchmark itself (server, Chromium)",
        "keeps about one CPU busy, so a start above about 0.5 means other work shared the machine.",
        "",
        "| case | first image | full resolution | overlay shown | toggle: handler + layout | toggle: next frame "
        "| full-resolution bytes (before) |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {
        "radiograph_rg1": "radiograph RG1 1955 x 1841 (JPEG 2000, MONOCHROME1, as stored)",
        "radiograph": "radiograph 2048 x 1929 (RG1 upscaled, JPEG 2000 lossless, MONOCHROME1)",
        "fundus": "fundus photograph (IDRiD_02, JPEG, 2048 px wide)",
        "fundus_4288": "fundus DICOM 4288 x 2848 (IDRiD_01, JPEG baseline, OP)",
    }
    for case in results:
        sent, before = (statistics.median(run[key] for run in results[case]) for key in ("full_bytes", "before_bytes"))
        label = labels[case.removesuffix(DEFLATE_SUFFIX)] + (DEFLATE_SUFFIX if case.endswith(DEFLATE_SUFFIX) else "")
        lines.append(
            f"| {label} | {median(case, 'first_image')} | {median(case, 'full_image')} | "
            f"{median(case, 'overlay')} | {median(case, 'toggle_work')} | {median(case, 'toggle_frame')} | "
            f"{sent:,.0f} ({before:,.0f}, {sent / before:.0%}) |"
        )
    lines += [
        "",
        "Targets: first image under 500 ms for a 2048-px radiograph; full resolution under 1 s for the 4288-px",
        "fundus DICOM; the toggle within one frame (16 ms).",
        "\"First image\" is the 512-px preview (image.png?max_size=512, made at ingest and read from the blob store;",
        "the page preloads it) presented on the canvas; the full-resolution frame, asked for once the preview is in,",
        "replaces it when loaded: grayscale as the stored JPEG 2000 codestream, decoded in a worker with OpenJPEG's",
        "WebAssembly build (app/viewer/jpeg2000.py), or where it cannot be sent so as uint16 values compressed",
        "up-zigzag-shuffle-deflate (app/viewer/encodings.py; before both: raw uint16); colour as the stored JPEG",
        "(before: the full PNG). The first load of each case makes the form it sends; later loads read it kept (see",
        "the raw runs).",
        "\"Next frame\" waits for the browser's next vsync-aligned frame, so it includes up to one frame of",
        "waiting (16.7 ms at 60 Hz).",
        "",
        "Raw runs (ms):",
        "",
    ]
    for case, runs in results.items():
        for run in runs:
            lines.append(f"- {case}: " + ", ".join(
                f"{key} {value:.0f}" if key.endswith("bytes") else f"{key} {value:.1f}" for key, value in run.items()
            ))
    return "\n".join(lines) + "\n" + (f"\n{history}" if history else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "browser-timings.md",
                        help="report to write (default under reports/; --out docs/browser-timings.md publishes it)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (idrid/pristine/)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from app.main import create_app
    from tests.e2e.helpers import free_port, wait_for

    output = args.out
    # Earlier results, written by hand under "## History", are kept.
    previous = output.read_text() if output.exists() else ""
    history = previous[previous.index(HISTORY):] if HISTORY in previous else ""
    load_at_start = os.getloadavg()[0]
    email, studies = arrange(args.data_dir)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(run_sweeper=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="uvicorn")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in studies}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        for _ in range(args.repeats):
            for name, study_id in studies.items():
                results[name].append(measure(browser, f"http://127.0.0.1:{port}", email, study_id))
                if name in DEFLATED:
                    results.setdefault(name + DEFLATE_SUFFIX, []).append(
                        measure(browser, f"http://127.0.0.1:{port}", email, study_id, deflated=True))
        browser.close()
    server.should_exit = True
    thread.join(timeout=10)
    text = report(results, args.repeats, (load_at_start, os.getloadavg()[0]), history)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
