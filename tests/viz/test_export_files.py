"""explorer.viz.export: PNG/SVG files of plotly and bokeh figures, standalone HTML snapshots, and bad input.

References are independent of the exporter: PNG sizes are read from the file's IHDR header and compared with the
sizes the figures were given; SVGs are parsed as XML; a snapshot's embedded figure JSON is decoded with numpy
(plotly's base64 typed arrays) and compared with the figure's own arrays.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import plotly.graph_objects as go
import pytest
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure as bokeh_figure

from explorer.viz import export
from explorer.viz.export import (EXPORT_WIDTH, export_figures, export_image, render_figures, snapshot_html,
                                 write_snapshot)

SVG = "{http://www.w3.org/2000/svg}svg"
Z = np.arange(12, dtype=float).reshape(3, 4) / 7.0
XS, YS = [0.0, 1.0, 2.0, 3.0], [3.0, 1.0, 4.0, 1.5]


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def heatmap(width: int | None = 400, height: int = 300) -> go.Figure:
    return go.Figure(go.Heatmap(z=Z), layout=dict(width=width, height=height, title="heat"))


def line_plot(width: int = 300, height: int = 200):
    plot = bokeh_figure(width=width, height=height, title="line")
    plot.line("x", "y", source=ColumnDataSource({"x": XS, "y": YS}, name="points"))
    return plot


class Blocks(HTMLParser):
    """The snapshot's data blocks ``{name: (kind, json)}`` and its controls table ``{label: text}``."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, tuple[str, object]] = {}
        self.controls: dict[str, str] = {}
        self.script_srcs: list[str] = []
        self._block = None
        self._cell: list[str] | None = None
        self._row: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and "src" in attrs:
            self.script_srcs.append(attrs["src"])
        if tag == "script" and "snapshot-data" in (attrs.get("class") or ""):
            self._block = (attrs["data-name"], attrs["data-kind"], [])
        if tag in ("th", "td"):
            self._cell = []
        if tag == "tr":
            self._row = []

    def handle_data(self, data):
        if self._block is not None:
            self._block[2].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._block is not None:
            name, kind, parts = self._block
            self.data[name] = (kind, json.loads("".join(parts)))
            self._block = None
        if tag in ("th", "td") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr" and len(self._row) == 2:
            self.controls[self._row[0]] = self._row[1]


def parse(page: str) -> Blocks:
    blocks = Blocks()
    blocks.feed(page)
    return blocks


def decode_plotly(value):
    """A plotly JSON array (a list, or a base64 typed array ``{dtype, bdata, shape}``) as a numpy array."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return flat.reshape([int(s) for s in str(shape).split(",")]) if shape is not None else flat
    return np.asarray(value, dtype=float)


def bokeh_columns(item: dict, source_name: str) -> dict[str, np.ndarray]:
    """Columns of the named ColumnDataSource in a ``json_item`` (bokeh's serialisation: maps and ndarrays)."""
    def find(node):
        if isinstance(node, dict):
            if node.get("name") == "ColumnDataSource" and node.get("attributes", {}).get("name") == source_name:
                return node
            for value in node.values():
                hit = find(value)
                if hit is not None:
                    return hit
        elif isinstance(node, list):
            for value in node:
                hit = find(value)
                if hit is not None:
                    return hit
        return None

    source = find(item["doc"])
    assert source is not None, f"no source {source_name!r}"
    data = source["attributes"]["data"]
    entries = data["entries"] if isinstance(data, dict) and "entries" in data else list(data.items())
    out = {}
    for key, value in entries:
        if isinstance(value, dict) and value.get("type") == "ndarray":
            array = value["array"]
            if isinstance(array, dict) and array.get("type") == "bytes":
                out[key] = np.frombuffer(base64.b64decode(array["data"]), dtype=np.dtype(value["dtype"]))
            else:
                out[key] = np.asarray(array, dtype=float)
        else:
            out[key] = np.asarray(value, dtype=float)
    return out


# --- images -------------------------------------------------------------------------------------------------------
def test_plotly_png_has_the_figure_size_times_the_scale():
    files = render_figures({"sized": heatmap(400, 300), "no width": heatmap(None, 250)}, ("png",), scale=2)
    assert png_size(files["sized.png"]) == (800, 600)
    # no layout width: the export width, as a wide screen gives it
    assert png_size(files["no-width.png"]) == (2 * EXPORT_WIDTH, 500)
    assert png_size(export_image(heatmap(400, 300), "png", scale=1)) == (400, 300)


def test_plotly_svg_is_xml_with_the_figure_size():
    root = ET.fromstring(export_image(heatmap(400, 300), "svg"))
    assert root.tag == SVG and float(root.get("width")) == 400 and float(root.get("height")) == 300


def test_bokeh_png_and_svg_through_bokehjs():
    files = render_figures({"line": line_plot(300, 200)}, ("png", "svg"), scale=2)
    assert set(files) == {"line.png", "line.svg"}
    assert png_size(files["line.png"]) == (600, 400)
    root = ET.fromstring(files["line.svg"])
    assert root.tag == SVG and float(root.get("width")) == 300 and float(root.get("height")) == 200
    # the line was drawn: a path in the SVG crosses the plot
    assert any(el.tag.endswith("path") for el in root.iter())
    # scale applies to PNGs of bokeh figures as to plotly ones
    assert png_size(export_image(line_plot(250, 150), "png", scale=1)) == (250, 150)


def test_export_figures_writes_one_file_per_figure_and_format(tmp_path):
    written = export_figures(tmp_path, {"heat map": heatmap(320, 240), "line": line_plot(200, 120)}, scale=1)
    assert sorted(p.name for p in written) == ["heat-map.png", "heat-map.svg", "line.png", "line.svg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert png_size((tmp_path / "heat-map.png").read_bytes()) == (320, 240)
    assert png_size((tmp_path / "line.png").read_bytes()) == (200, 120)
    for name in ("heat-map.svg", "line.svg"):
        assert ET.fromstring((tmp_path / name).read_bytes()).tag == SVG
    # a list gets numbered names; only the formats asked for
    written = export_figures(tmp_path / ".", [heatmap(100, 80), heatmap(100, 80)], formats=("svg",))
    assert [p.name for p in written] == ["figure-1.svg", "figure-2.svg"]


# --- snapshot -------------------------------------------------------------------------------------------------------
def test_snapshot_holds_the_figures_data_and_the_controls():
    fig = go.Figure([go.Heatmap(z=Z), go.Scatter(x=np.array(XS), y=np.array(YS))],
                    layout=dict(title="heat"))
    controls = {"layers": 6, "kernel size": 3, "photo": "china", "on": True, "range": (2, 9), "none": None,
                "<b>label</b>": "<script>alert(1)</script>"}
    page = snapshot_html({"the heatmap": fig, "line": line_plot()}, controls, title="Receptive <fields>")
    blocks = parse(page)
    kind, spec = blocks.data["the heatmap"]
    assert kind == "plotly"
    np.testing.assert_allclose(decode_plotly(spec["data"][0]["z"]), fig.data[0].z, rtol=0, atol=1e-12)
    np.testing.assert_allclose(decode_plotly(spec["data"][1]["y"]), YS, rtol=0, atol=1e-12)
    assert spec["layout"]["title"]["text"] == "heat"
    kind, item = blocks.data["line"]
    assert kind == "bokeh"
    columns = bokeh_columns(item, "points")
    np.testing.assert_allclose(columns["x"], XS, atol=1e-12)
    np.testing.assert_allclose(columns["y"], YS, atol=1e-12)
    assert blocks.controls == {"layers": "6", "kernel size": "3", "photo": "china", "on": "on", "range": "2, 9",
                               "none": "—", "<b>label</b>": "<script>alert(1)</script>"}
    # escaped: neither the label nor the value nor the title became markup
    assert "<script>alert(1)" not in page and "<b>label</b>" not in page and "Receptive <fields>" not in page
    assert "<title>Receptive &lt;fields&gt;</title>" in page
    # offline: plotly.js and BokehJS are inline, nothing has a src
    assert blocks.script_srcs == [] and '<script src="http' not in page and "<link" not in page
    assert "Plotly.newPlot" in page and "Bokeh.embed.embed_item" in page
    assert page.count("window.Plotly") >= 1 and len(page) > 3_000_000  # plotly.js itself is in the page


def test_snapshot_leaves_out_a_library_no_figure_needs():
    page = snapshot_html([heatmap()], {}, "plots only")
    assert "Bokeh.set_log_level" not in page and "Plotly.newPlot" in page
    assert parse(page).data["figure-1"][0] == "plotly"


def test_write_snapshot_writes_the_page(tmp_path):
    path = write_snapshot(tmp_path / "snap.html", {"h": heatmap()}, {"a": 1}, "T")
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "snap.html" and text == snapshot_html({"h": heatmap()}, {"a": 1}, "T")
    assert str(tmp_path) not in text  # no path of the kernel's machine in the page


# --- bad input ------------------------------------------------------------------------------------------------------
def test_nothing_drawn_is_a_clear_value_error(tmp_path):
    for call in (lambda: snapshot_html({}, {}, "t"), lambda: export_figures(tmp_path, []),
                 lambda: render_figures({}), lambda: write_snapshot(tmp_path / "s.html", [])):
        with pytest.raises(ValueError, match="no figure has been drawn yet"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_wrong_types_name_the_argument(tmp_path):
    with pytest.raises(TypeError, match="folder"):
        export_figures(42, [heatmap()])
    with pytest.raises(TypeError, match="figures"):
        export_figures(tmp_path, ["not a figure"])
    with pytest.raises(TypeError, match="figures"):
        snapshot_html(42, {}, "t")
    with pytest.raises(TypeError, match="title"):
        snapshot_html([heatmap()], {}, title=3)
    with pytest.raises(TypeError, match="controls"):
        snapshot_html([heatmap()], [("a", 1)], "t")
    with pytest.raises(TypeError, match="controls"):
        snapshot_html([heatmap()], {"a": object()}, "t")
    with pytest.raises(TypeError, match="path"):
        write_snapshot(None, [heatmap()])
    with pytest.raises(TypeError, match="fig"):
        export_image("figure.png")
    with pytest.raises(ValueError, match="fmt"):
        export_image(heatmap(), "jpg")
    with pytest.raises(ValueError, match="formats"):
        export_figures(tmp_path, [heatmap()], formats=("jpg",))
    with pytest.raises(ValueError, match="scale"):
        export_figures(tmp_path, [heatmap()], scale=0)


def test_unusable_paths_are_named(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(ValueError, match=re.escape(f"folder: the folder {str(missing)!r} does not exist")):
        export_figures(missing, [heatmap()])
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        export_figures(a_file, [heatmap()])
    with pytest.raises(ValueError, match=r"path: .*does not exist"):
        write_snapshot(missing / "snap.html", [heatmap()])
    with pytest.raises(ValueError, match="is a folder"):
        write_snapshot(tmp_path, [heatmap()])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_read_only_folders_are_refused(tmp_path, monkeypatch):
    # tests run as root, which os.access and the kernel let write anywhere: a read-only folder is simulated
    real = os.access
    monkeypatch.setattr(export.os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    with pytest.raises(PermissionError, match=re.escape(f"folder: the folder {str(tmp_path)!r} is not writable")):
        export_figures(tmp_path, [heatmap()])
    with pytest.raises(PermissionError, match="path: .*not writable"):
        write_snapshot(tmp_path / "snap.html", [heatmap()])


def test_a_failing_write_becomes_a_permission_error_naming_the_path(tmp_path, monkeypatch):
    def refuse(self, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(export.Path, "write_bytes", refuse)
    with pytest.raises(PermissionError, match=r"path: cannot write .*snap\.html.*Permission denied"):
        write_snapshot(tmp_path / "snap.html", [heatmap()])
