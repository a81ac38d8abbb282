"""In a real browser, viewer.js windows a reader's own window with the VOI LUT Function the server names exactly as
pydicom does (the server's renderings), and heatmap.js colours with the server's matplotlib tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.ingest import pixels
from app.viewer import colormaps
from models import grayscale

pytestmark = pytest.mark.browser

WINDOWS = [
    *(grayscale.Window(600.0, 1600.0, function) for function in grayscale.VOI_FUNCTIONS),
    grayscale.Window(40.5, 1.0),  # LINEAR at width 1: a threshold
    grayscale.Window(127.5, 255.0, "LINEAR_EXACT"),  # the colour images' identity
    grayscale.Window(-600.0, 1500.0, "SIGMOID"),
]


def test_the_browser_windows_and_colours_as_the_server(server, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/login")
    values = np.concatenate([np.arange(-1200, 2200, 0.5), [40.0, 41.0, 127.0, 128.0]]).tolist()
    levels = page.evaluate(
        """async ({ values, windows }) => {
            const { voiLevel } = await import('/static/viewer.js');
            return windows.map((w) => values.map((v) => voiLevel(v, w)));
        }""",
        {"values": values, "windows": [dataclasses.asdict(window) for window in WINDOWS]},
    )
    for window, browser_levels in zip(WINDOWS, levels, strict=True):
        server_levels = pixels.to_bytes(grayscale.voi_unit(np.array(values), window))
        assert browser_levels == server_levels.tolist(), window
    names = sorted(colormaps.MATPLOTLIB_NAMES)
    tables = page.evaluate(
        """async (names) => {
            const heatmap = await import('/static/heatmap.js');
            await heatmap.loadColourTables();
            return names.map((name) => Array.from(heatmap.colourTable(name)));
        }""",
        names,
    )
    assert tables == [colormaps.table(name).ravel().tolist() for name in names]
    assert not errors
