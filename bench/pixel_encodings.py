"""Which compressed form of a full-resolution frame the viewer should fetch (a benchmark, not a test).

For grayscale frames (the uint16 values /pixels sends) and a 4288 x 2848 colour photograph, each candidate's
bytes, the server's encode time (median of 5, this process) and the browser's decode time (median of 5, headless
Chromium: native DecompressionStream or createImageBitmap, plus the typed-array loop viewer.js runs) to the
array or bitmap the viewer paints. Plain gzip stands for `Content-Encoding: gzip`, which the browser undoes in its
network stack with the same inflater. Writes a Markdown table to stdout.

Run: .venv/bin/python bench/pixel_encodings.py [--data-dir DATA] (DATA/idrid/pristine/IDRiD_01.jpg; without it
the same JPEG stream from demo/IDRiD_01_OP_jpegbaseline.dcm)
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from app.ingest import pixels as ingest_pixels  # noqa: E402
from app.viewer import encodings  # noqa: E402
from app.viewer.raw import _to_uint16  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
REPEATS = 5
GRAY_FIXTURES = ("RG1_J2KI.dcm", "RG3_J2KI.dcm", "MR2_J2KI.dcm")
ORIGIN = "http://bench.invalid"
# Each decoder takes the fetched body and the pixel count and returns the array the viewer paints.
DECODE_JS = """async ({ url, kind, count, rows, repeats }) => {
  const body = await (await fetch(url)).arrayBuffer();
  const inflate = async (format) =>
    new Uint8Array(await new Response(new Blob([body]).stream().pipeThrough(new DecompressionStream(format)))
      .arrayBuffer());
  const unshuffle = (bytes, undelta) => {
    const out = new Uint16Array(count);
    let value = 0;
    for (let i = 0; i < count; i += 1) {
      const d = bytes[i] | (bytes[count + i] << 8);
      value = undelta ? (value + d) & 0xffff : d;
      out[i] = value;
    }
    return out;
  };
  const prefix = (bytes) => {
    const d = new Uint16Array(bytes.buffer, 0, count);
    const out = new Uint16Array(count);
    let value = 0;
    for (let i = 0; i < count; i += 1) { value = (value + d[i]) & 0xffff; out[i] = value; }
    return out;
  };
  const decoders = {
    raw: async () => new Uint16Array(body, 0, count),
    gzip: async () => new Uint16Array((await inflate("gzip")).buffer, 0, count),
    "shuffle-deflate": async () => unshuffle(await inflate("deflate"), false),
    "delta-shuffle-deflate": async () => unshuffle(await inflate("deflate"), true),
    "up-zigzag-shuffle-deflate": async () => {
      const { valuesFromPlanes } = await import("/static/viewer.js");
      return valuesFromPlanes(await inflate("deflate"), rows, count / rows);
    },
    "delta-deflate": async () => prefix(await inflate("deflate")),
    image: async () => createImageBitmap(new Blob([body]), { colorSpaceConversion: "none" }),
  };
  const times = [];
  let sample = 0;
  for (let r = 0; r < repeats; r += 1) {
    const t0 = performance.now();
    const decoded = await decoders[kind]();
    times.push(performance.now() - t0);
    sample = decoded.width ? decoded.width : decoded[count >> 1];
  }
  times.sort((a, b) => a - b);
  return { ms: times[times.length >> 1], sample };
}"""


def _median_ms(make: Callable[[], bytes]) -> tuple[bytes, float]:
    times, body = [], b""
    for _ in range(REPEATS):
        start = time.perf_counter()
        body = make()
        times.append((time.perf_counter() - start) * 1000)
    return body, statistics.median(times)


def gray_candidates(values: np.ndarray) -> dict[str, tuple[str, Callable[[], bytes]]]:
    """name -> (browser decoder, server encoder) for one uint16 frame."""
    raw = values.astype("<u2").tobytes()
    flat = values.astype("<u2").ravel()
    shuffled = flat.view(np.uint8).reshape(-1, 2).T.tobytes()
    differences = np.diff(flat, prepend=np.uint16(0)).astype("<u2")
    delta = differences.tobytes()
    delta_shuffled = differences.view(np.uint8).reshape(-1, 2).T.tobytes()
    return {
        "raw (today)": ("raw", lambda: raw),
        "gzip 6 (Content-Encoding)": ("gzip", lambda: gzip.compress(raw, 6)),
        "gzip 1 (Content-Encoding)": ("gzip", lambda: gzip.compress(raw, 1)),
        "shuffle + deflate 1": ("shuffle-deflate", lambda: zlib.compress(shuffled, 1)),
        "delta + deflate 1": ("delta-deflate", lambda: zlib.compress(delta, 1)),
        "delta + shuffle + deflate 1 (row-major delta)": (
            "delta-shuffle-deflate",
            lambda: zlib.compress(delta_shuffled, 1),
        ),
        "up + zigzag + shuffle + deflate 1 (chosen)": (
            "up-zigzag-shuffle-deflate",
            lambda: encodings.encode(values, level=1),
        ),
        "up + zigzag + shuffle + deflate 6": ("up-zigzag-shuffle-deflate", lambda: encodings.encode(values, level=6)),
    }


def colour_candidates(jpeg: bytes) -> dict[str, tuple[str, Callable[[], bytes]]]:
    rgb = Image.fromarray(ingest_pixels.load_image(jpeg))

    def save(**options: Any) -> Callable[[], bytes]:
        def encode() -> bytes:
            buffer = io.BytesIO()
            rgb.save(buffer, **options)
            return buffer.getvalue()

        return encode

    return {
        "stored JPEG, passed through": ("image", lambda: jpeg),
        "PNG level 3 (today)": ("image", save(format="PNG", compress_level=3)),
        "PNG level 1": ("image", save(format="PNG", compress_level=1)),
        "WebP lossless, method 0": ("image", save(format="WEBP", lossless=True, method=0, quality=0)),
    }


def measure(page, name: str, kind: str, encode: Callable[[], bytes], shape: tuple[int, int]) -> dict[str, Any]:
    body, encode_ms = _median_ms(encode)
    page.route(f"{ORIGIN}/body", lambda route: route.fulfill(body=body, content_type="application/octet-stream"))
    result = page.evaluate(
        DECODE_JS,
        {"url": f"{ORIGIN}/body", "kind": kind, "count": shape[0] * shape[1], "rows": shape[0], "repeats": REPEATS},
    )
    page.unroute(f"{ORIGIN}/body")
    return {"name": name, "bytes": len(body), "encode_ms": encode_ms, "decode_ms": result["ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from tests.app.viewer.factories import pristine_idrid_01

    jpeg = pristine_idrid_01(args.data_dir)
    cases: list[tuple[str, tuple[int, int], dict[str, tuple[str, Callable[[], bytes]]]]] = []
    for fixture in GRAY_FIXTURES:
        data = (ROOT / "tests" / "fixtures" / "dicom" / fixture).read_bytes()
        values, _, _ = _to_uint16(ingest_pixels.load_frame(data, "dicom"))
        cases.append((f"{fixture} {values.shape[1]} x {values.shape[0]}", values.shape, gray_candidates(values)))
    cases.append(("IDRiD_01.jpg 4288 x 2848 RGB", (2848, 4288), colour_candidates(jpeg)))
    load = os.getloadavg()[0]
    lines = ["| frame | form | bytes | vs raw | server encode ms | browser decode ms |", "|---|---|---|---|---|---|"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        page = browser.new_page()
        page.route(
            f"{ORIGIN}/",
            lambda route: route.fulfill(body="<!doctype html><title>bench</title>", content_type="text/html"),
        )
        page.route(
            f"{ORIGIN}/static/viewer.js",
            lambda route: route.fulfill(
                path=str(ROOT / "app" / "static" / "viewer.js"), content_type="text/javascript"
            ),
        )
        page.goto(f"{ORIGIN}/")
        for label, shape, candidates in cases:
            raw_bytes = shape[0] * shape[1] * (3 if "RGB" in label else 2)
            for name, (kind, encode) in candidates.items():
                row = measure(page, name, kind, encode, shape)
                lines.append(
                    f"| {label} | {name} | {row['bytes']:,} | {row['bytes'] / raw_bytes:.0%} | "
                    f"{row['encode_ms']:.0f} | {row['decode_ms']:.0f} |"
                )
        browser.close()
    lines.append("")
    lines.append(
        f"Load average (1 min) at start / end: {load:.2f} / {os.getloadavg()[0]:.2f}; "
        f'{os.cpu_count()} CPUs; "vs raw" for the photograph is against 3 bytes a pixel.'
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
