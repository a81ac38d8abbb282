"""The heatmap colour tables are matplotlib's, to the byte; the browser's copy (static/colormaps.json) and the
overlay PNG use the same bytes; the reading room offers exactly these maps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from app.viewer import colormaps
from app.viewer.images import OVERLAY_COLORMAP, colorize

TEMPLATES = Path(colormaps.__file__).resolve().parents[1] / "templates"


@pytest.mark.parametrize("name", sorted(colormaps.MATPLOTLIB_NAMES))
def test_each_table_is_matplotlibs_colour_map_to_the_byte(name):
    table = colormaps.table(name)
    assert table.shape == (256, 3) and table.dtype == np.uint8 and not table.flags.writeable
    reference = matplotlib.colormaps[colormaps.MATPLOTLIB_NAMES[name]]
    np.testing.assert_array_equal(table, reference(np.linspace(0.0, 1.0, 256), bytes=True)[:, :3])


def test_diverging_is_blue_for_negative_and_red_for_positive():
    table = colormaps.table("diverging").astype(int)
    assert table[0, 2] > table[0, 0] and table[255, 0] > table[255, 2]  # blue below, red above
    assert (table[127] > 240).all() and (table[128] > 240).all()  # near white at zero


def test_the_browsers_tables_are_the_servers():
    assert colormaps.STATIC_FILE.read_text(encoding="utf-8") == colormaps.static_json(), (
        "static/colormaps.json is out of date: run `python -m app.viewer.colormaps`"
    )
    served = json.loads(colormaps.static_json())
    for name in colormaps.MATPLOTLIB_NAMES:
        assert served[name] == colormaps.table(name).ravel().tolist()


def test_the_reading_room_offers_these_maps():
    page = (TEMPLATES / "reading" / "read.html").read_text(encoding="utf-8")
    select = re.search(r'<select id="colormap">(.*?)</select>', page, re.S)
    assert select is not None
    offered = set(re.findall(r'<option value="([^"]+)"', select.group(1))) - {"auto"}
    assert offered == set(colormaps.MATPLOTLIB_NAMES)


def test_the_overlay_png_colours_are_the_table():
    ramp = np.linspace(-1.0, 1.0, 511, dtype=np.float32).reshape(1, -1)  # |a| / max |a| runs 1 .. 0 .. 1
    rgba = colorize(ramp)
    index = np.floor(np.abs(ramp[0]) * 255 + 0.5).astype(int)
    np.testing.assert_array_equal(rgba[0, :, :3], colormaps.table(OVERLAY_COLORMAP)[index])
    assert {tuple(colour) for colour in rgba[0, :, :3]} == {tuple(colour) for colour in colormaps.table("jet")}
