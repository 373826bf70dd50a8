"""Every app adapts to its width: rows wrap, figures have no fixed width and follow their container.

The browser suites measure the result (no figure or control wider than its output area at 1280 and 1920 px, in
JupyterLab and Voila); this checks the structure that makes it so, for every app, without a browser.
"""

from __future__ import annotations

import json

import ipywidgets as W
import pytest

from explorer.apps import CostScalingApp, CrossModalApp, ReceptiveFieldApp
from explorer.apps._bokeh import BokehWidget
from explorer.apps._layout import WidthWatcher
from explorer.apps._plot import PlotView


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _walk(child)


@pytest.fixture(scope="module", params=["receptive_field", "cross_modal", "cost_scaling", "attention_maps"])
def app(request):
    if request.param == "attention_maps":
        from explorer.apps import AttentionMapsApp

        return AttentionMapsApp()
    return {"receptive_field": ReceptiveFieldApp, "cross_modal": CrossModalApp,
            "cost_scaling": CostScalingApp}[request.param]()


def test_figures_take_their_width_from_the_page(app):
    figures = [w for w in _walk(app.widget) if isinstance(w, PlotView)]
    assert figures
    for figure in figures:
        assert figure.figure.layout.width is None, "a fixed width overflows JupyterLab's narrower main area"
        assert "width" not in json.loads(figure.frame)  # what the page receives: plotly sizes it to its element


def test_rows_wrap_and_the_app_watches_its_width(app):
    widgets = list(_walk(app.widget))
    rows = [w for w in widgets if isinstance(w, W.HBox)]
    assert rows and all(r.layout.flex_flow == "row wrap" for r in rows)
    assert sum(isinstance(w, WidthWatcher) for w in widgets) == 1
    # fixed pixel widths only on controls that fit any page (<= 420 px), and on the bokeh head view (420 px)
    for w in widgets:
        width = getattr(getattr(w, "layout", None), "width", None) 
        if isinstance(width, str) and width.endswith("px"):
            assert float(width[:-2]) <= 420, (type(w).__name__, width)
        if isinstance(w, BokehWidget):
            assert w.spec["doc"]["roots"][0]["attributes"]["width"] <= 420
