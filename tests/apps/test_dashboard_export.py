"""The dashboard's export bar: PNG, SVG and HTML snapshot of the selected tab as download links; clear refusals.

The figures and controls are found by walking the app's widget tree; the numbers in the exports are compared with
the live views' figures (PNG sizes from the IHDR header, the snapshot's embedded JSON decoded with numpy).
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import pytest
from bokeh.models import ColumnDataSource, Range1d
from bokeh.plotting import figure as bokeh_figure

from explorer.apps import _export
from explorer.apps._bokeh import BokehWidget
from explorer.apps._callbacks import guarded
from explorer.apps._comm_guard import guard_of
from explorer.apps._export import (NO_FIGURES, NOT_OPENED, STILL_DRAWING, ExportBar, bokeh_model, find_controls, find_views,
                                   shown_error, tab_figures)
from explorer.apps._plot import PlotView
from explorer.apps.dashboard import dashboard
from explorer.guard import RequestRefused
from explorer.viz.export import EXPORT_WIDTH
from tests.viz.test_export_files import bokeh_columns, decode_plotly, parse, png_size

SVG = "{http://www.w3.org/2000/svg}svg"
LINK = re.compile(r"download='([^']+)' href='data:([^;]+);base64,([A-Za-z0-9+/=]+)'")


def html_text(value: str) -> str:
    return re.sub(r"<[^>]+>", "", value)


def links(bar: ExportBar) -> dict[str, tuple[str, bytes]]:
    """``{file name: (mime type, bytes)}`` of the bar's download links."""
    return {name: (mime, base64.b64decode(payload)) for name, mime, payload in LINK.findall(bar.links.value)}


@pytest.fixture(scope="module")
def tab():
    return dashboard()


class FakeApp:
    def __init__(self, *children) -> None:
        self.widget = W.VBox(list(children))


def heat(z) -> go.Figure:
    return go.Figure(go.Heatmap(z=z), layout=dict(height=240, title="fake"))


def head_view_like() -> BokehWidget:
    plot = bokeh_figure(width=320, height=180, y_range=Range1d(0, 10, name="yr"))
    plot.scatter("x", "y", source=ColumnDataSource({"x": [0.0, 1.0], "y": [1.0, 2.0]}, name="pts"))
    return BokehWidget(plot)


# --- the dashboard ------------------------------------------------------------------------------------------------
def test_the_page_shows_the_bar_above_the_tabs(tab):
    assert tab.page.children == (tab.export.widget, tab)
    assert tab._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"] == tab.page.model_id
    # every widget of the bar is guarded against what a modified page could send
    for widget in (tab.export.png, tab.export.svg, tab.export.snapshot, tab.page):
        assert guard_of(widget) is not None


def test_png_and_svg_of_the_receptive_field_tab(tab):
    tab.selected_index = 0
    app = tab.apps[0]
    layout = app.figure.figure.layout
    tab.export.png.click()
    files = links(tab.export)
    assert list(files) == ["receptive-fields-rf-figure.png"]
    mime, png = files["receptive-fields-rf-figure.png"]
    assert mime == "image/png"
    # the figure has no layout width (it fills the page): the export width, at scale 2
    assert png_size(png) == (2 * (layout.width or EXPORT_WIDTH), 2 * layout.height)
    assert "data-count='1'" in tab.export.status.value and "data-format='png'" in tab.export.status.value
    tab.export.svg.click()
    (name, (mime, svg)), = links(tab.export).items()
    root = ET.fromstring(svg)
    assert name.endswith(".svg") and mime == "image/svg+xml" and root.tag == SVG
    assert float(root.get("height")) == layout.height


def test_snapshot_of_the_receptive_field_tab_matches_the_live_tab(tab):
    tab.selected_index = 0
    app = tab.apps[0]
    app.layers.value = 4  # a state other than the default: the snapshot is of now
    tab.export.snapshot.click()
    (name, (mime, raw)), = links(tab.export).items()
    assert name == "receptive-fields-snapshot.html" and mime == "text/html"
    page = raw.decode("utf-8")
    blocks = parse(page)
    (kind, spec), = blocks.data.values()
    live = app.figure.figure
    assert kind == "plotly" and len(spec["data"]) == len(live.data)
    for trace, live_trace in zip(spec["data"], live.data):
        assert trace["type"] == live_trace.type
        if trace["type"] == "heatmap":
            np.testing.assert_allclose(decode_plotly(trace["z"]), np.asarray(live_trace.z, dtype=float),
                                       rtol=0, atol=1e-9)
    assert spec["layout"]["shapes"][0]["x0"] == pytest.approx(live.layout.shapes[0].x0, abs=1e-9)
    # the controls as the visitor set them, read from the widgets themselves
    assert blocks.controls["conv layers"] == "4" == str(app.layers.value)
    assert blocks.controls["photo"] == app.photo.value and blocks.controls["dilation"] == str(app.dilation.label)
    assert blocks.script_srcs == [] and '<script src="http' not in page
    assert "Traceback" not in page and "/work/" not in page and "site-packages" not in page


def test_a_tab_that_failed_to_open_has_nothing_to_export():
    def broken():
        raise ValueError("the model file is missing")

    tab = dashboard([("first", lambda: FakeApp(PlotView(heat([[1.0]])))), ("broken", broken)])
    tab.selected_index = 1
    tab.export.png.click()
    assert NOT_OPENED.split(":")[0] in tab.export.status.value and tab.export.links.value == ""
    assert tab.export.last == {}


def test_switching_tabs_clears_the_last_export():
    tab = dashboard([("a", lambda: FakeApp(PlotView(heat([[1.0, 2.0]])))),
                     ("b", lambda: FakeApp(W.HTML("no figure here")))])
    tab.export.svg.click()
    assert "data-count='1'" in tab.export.status.value
    tab.selected_index = 1
    assert tab.export.status.value == "" and tab.export.links.value == ""
    tab.export.svg.click()
    assert "this tab shows no figure" in tab.export.status.value and NO_FIGURES.startswith("Nothing to export")


def test_placeholders_are_not_exported():
    computing = {"data": [], "layout": {"height": 200, "annotations": [{"text": "computing …", "showarrow": False}]}}
    placeholder, drawn = PlotView(go.Figure(computing)), PlotView(heat([[1.0, 2.0]]), "drawn")
    app = FakeApp(placeholder)
    bar = ExportBar.for_app(app, "Slow")
    bar.png.click()
    assert html_text(bar.status.value) == STILL_DRAWING and bar.last == {}
    app.widget.children += (drawn,)
    assert list(tab_figures(app.widget)) == ["drawn"]
    bar.svg.click()
    assert list(bar.last) == ["slow-drawn.svg"]


# --- refusals and failures ------------------------------------------------------------------------------------------
def test_a_refused_computation_blocks_the_export():
    message = W.HTML()
    view = PlotView(heat([[1.0, 2.0]]))
    app = FakeApp(message, view)
    bar = ExportBar.for_app(app, "Fake")

    def refuse():
        raise RequestRefused("attention_math at n=65536 would need 34.4 GB of activations (budget 2.0 GB)")

    assert not guarded(refuse, message, "fake-error")  # the apps' callback policy shows the refusal
    assert shown_error(app.widget).startswith("attention_math at n=65536 would need 34.4 GB")
    for button in (bar.png, bar.svg, bar.snapshot):
        button.click()
        assert "did not complete" in bar.status.value and "34.4 GB" in bar.status.value
        assert bar.links.value == "" and bar.last == {}
    assert guarded(lambda: None, message, "fake-error")  # the next successful action clears the message
    bar.snapshot.click()
    assert "data-count='1'" in bar.status.value


def test_a_real_refusal_of_the_receptive_field_app(monkeypatch):
    from explorer.apps import ReceptiveFieldApp
    from explorer.guard import ENV_BUDGET

    app = ReceptiveFieldApp()
    bar = ExportBar.for_app(app, "Receptive fields")
    monkeypatch.setenv(ENV_BUDGET, "1000")  # 1 kB: no conv stack fits
    app.layers.value = 7
    assert "rf-error" in app.message.value
    bar.png.click()
    assert "did not complete" in bar.status.value and "would need" in bar.status.value and bar.last == {}


def test_an_export_failure_never_raises(monkeypatch):
    bar = ExportBar.for_app(FakeApp(PlotView(heat([[1.0]]))), "Fake")

    def missing(*_args, **_kwargs):
        raise RuntimeError("export needs kaleido and Chromium")

    monkeypatch.setattr(_export, "render_figures", missing)
    bar.png.click()  # must not raise into the kernel
    assert "export-error" in bar.status.value and "kaleido and Chromium" in bar.status.value

    def broken(*_args, **_kwargs):
        raise KeyError("/secret/path")

    monkeypatch.setattr(_export, "render_figures", broken)
    bar.svg.click()
    assert "could not export: KeyError" in bar.status.value and "/secret/path" not in bar.status.value


# --- finding figures and controls -----------------------------------------------------------------------------------
def test_hidden_figures_and_controls_are_left_out():
    shown, hidden = PlotView(heat([[1.0]]), "shown-fig"), PlotView(heat([[2.0]]), "hidden-fig")
    box = W.VBox([hidden, W.IntSlider(3, description="inside hidden")], layout=W.Layout(display="none"))
    slider = W.IntSlider(5, 0, 9, description="n")
    invisible = W.Dropdown(options=["a", "b"], value="b", description="gone", layout=W.Layout(visibility="hidden"))
    text = W.Textarea("a sentence", placeholder="Type a sentence")
    app = FakeApp(W.HBox([slider, invisible, text]), shown, box, W.Checkbox(True, description="flag"),
                  W.ToggleButtons(options=[("raw attention", "raw"), ("rollout", "rollout")], value="rollout"),
                  W.SelectMultiple(options=["x", "y", "z"], value=["x", "z"], description="ops"),
                  W.IntRangeSlider(value=(2, 6), min=0, max=9, description="sizes"), W.HTML("<b>not a control</b>"))
    assert list(find_views(app.widget)) == ["shown-fig"]
    assert find_controls(app.widget) == {"n": 5, "Type a sentence": "a sentence", "flag": True,
                                         "ToggleButtons 4": "rollout", "ops": ("x", "z"), "sizes": (2, 6)}
    # cells of a grid share their description ("1", "2"): their tooltips tell them apart, else a count does
    cells = [W.ToggleButton(i == 2, description=str(i % 2 + 1), tooltip=f"ablate head {i}") for i in range(4)]
    plain = [W.Checkbox(True, description="same"), W.Checkbox(False, description="same")]
    assert find_controls(W.VBox(cells + plain)) == {"ablate head 0": False, "ablate head 1": False,
                                                    "ablate head 2": True, "ablate head 3": False,
                                                    "same": True, "same (2)": False}


def test_a_bokeh_view_exports_the_data_the_page_shows():
    view = head_view_like()
    view.update(sources={"pts": {"x": [5.0, 6.0, 7.0], "y": [0.5, 0.25, 0.125]}}, ranges={"yr": (-1, 3)})
    model = bokeh_model(view)
    assert model.select_one({"name": "pts"}).data == {"x": [5.0, 6.0, 7.0], "y": [0.5, 0.25, 0.125]}
    assert (model.y_range.start, model.y_range.end) == (-1, 3)
    app = FakeApp(W.HBox([view]), PlotView(heat(np.eye(3)), "m"))
    figures = tab_figures(app.widget)
    assert list(figures) == ["figure-1", "m"]
    bar = ExportBar.for_app(app, "Two kinds")
    bar.snapshot.click()
    blocks = parse(links(bar)["two-kinds-snapshot.html"][1].decode())
    kind, item = blocks.data["figure-1"]
    columns = bokeh_columns(item, "pts")
    assert kind == "bokeh"
    np.testing.assert_allclose(columns["x"], [5.0, 6.0, 7.0], atol=0)
    np.testing.assert_allclose(columns["y"], [0.5, 0.25, 0.125], atol=0)
    np.testing.assert_allclose(decode_plotly(blocks.data["m"][1]["data"][0]["z"]), np.eye(3), atol=0)
    bar.png.click()
    files = links(bar)
    assert sorted(files) == ["two-kinds-figure-1.png", "two-kinds-m.png"]
    assert png_size(files["two-kinds-figure-1.png"][1]) == (640, 360)  # 320 x 180 bokeh plot at scale 2
    assert png_size(files["two-kinds-m.png"][1]) == (2 * EXPORT_WIDTH, 480)
