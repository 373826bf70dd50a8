"""The Voila dashboard in a real browser: renders, no errors, sliders update the plot, numbers match the library."""

from __future__ import annotations

import time

import pytest

from dataclasses import replace

from explorer.analysis import receptive_field
from explorer.apps import ReceptiveFieldApp
from explorer.models import build_conv_stack
from tests.browser.conftest import KNOWN_OFFLINE, TIMINGS, open_tab
from tests.browser.dashboard_server import ROOT

pytestmark = pytest.mark.browser

PLOT = ".rf-figure.js-plotly-plot"  # the FigureWidget element is the plotly graph div
ARTIFACTS = ROOT / "tests" / "browser" / "_artifacts"


@pytest.fixture
def rf_page(dashboard_page):
    return open_tab(dashboard_page, "Receptive fields", f"{PLOT} .main-svg")


def _rf_shape(page) -> dict:
    """The theoretical-field rectangle as plotly.js holds it (layout.shapes[0])."""
    return page.evaluate(f"() => {{ const s = document.querySelector('{PLOT}').layout.shapes[0];"
                         "return {x0: s.x0, x1: s.x1, y0: s.y0, y1: s.y1}; }")


def _rf_size(page) -> int:
    return int(page.locator(".rf-summary .rf-size").get_attribute("data-size"))


def _press(page, slider_class: str, key: str, times: int) -> None:
    handle = page.locator(f".{slider_class} .noUi-handle")
    handle.focus()
    for _ in range(times):
        handle.press(key)


def test_no_error_output(rf_page):
    page = rf_page
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    body = page.inner_text("body")
    for marker in ("Traceback", "Error", "There was an error"):
        assert marker not in body, f"{marker!r} on the page"
    assert page.locator(".rf-error").count() == 0
    assert page.errors == []  # page errors and console errors
    # nothing but Voila's CDN stylesheet failed to load: the dashboard needs no network
    assert [url for url in page.failed_requests if not url.startswith(KNOWN_OFFLINE)] == []


def test_plot_visible_with_photo_and_heatmap(rf_page):
    page = rf_page
    assert page.locator(PLOT).is_visible()
    kinds = page.evaluate(f"() => document.querySelector('{PLOT}').data.map(t => t.type)")
    assert kinds[:2] == ["image", "heatmap"]
    assert page.locator(".rf-table tbody tr").count() >= 2


def test_default_number_matches_library(rf_page):
    expected = receptive_field(build_conv_stack(ReceptiveFieldApp.DEFAULT)).output.size[0]
    assert _rf_size(rf_page) == expected


def _wait_for_box(page, x0: float, x1: float, timeout: float = 30_000) -> None:
    page.wait_for_function(
        f"([x0, x1]) => {{ const s = document.querySelector('{PLOT}').layout.shapes[0];"
        "return Math.abs(s.x0 - x0) < 1e-6 && Math.abs(s.x1 - x1) < 1e-6; }", arg=[x0, x1], timeout=timeout)


def add_layers_and_wait(page, presses: int = 2):
    """Press the "conv layers" slider right ``presses`` times; wait until the page shows the library's field size
    and draws the library's box for the (rescaled) output position. Returns the library's field."""
    layers = int(page.locator(".rf-layers .widget-readout").inner_text()) + presses
    # The library's field for the new setting; the page must end up drawing exactly that box.
    expected = receptive_field(build_conv_stack(replace(ReceptiveFieldApp.DEFAULT, layers=layers))).output
    _press(page, "rf-layers", "ArrowRight", presses)
    page.wait_for_function("(n) => document.querySelector('.rf-summary .rf-size')?.dataset.size == n",
                           arg=str(expected.size[0]), timeout=30_000)
    # the position sliders were rescaled to the new output size; the box must be the library's for that position
    col = int(page.locator(".rf-col .widget-readout").inner_text())
    (c0, c1) = expected.box((0, col))[1]
    _wait_for_box(page, c0 - 0.5, c1 + 0.5)
    assert int(page.locator(".rf-layers .widget-readout").inner_text()) == layers
    return expected


def test_slider_changes_plot_and_number(rf_page):
    page = rf_page
    before_shape, before_size = _rf_shape(page), _rf_size(page)
    start = time.perf_counter()
    expected = add_layers_and_wait(page, 2)
    TIMINGS["layers slider (2 key presses) to final plot (s)"] = time.perf_counter() - start
    after_shape, after_size = _rf_shape(page), _rf_size(page)
    assert after_size == expected.size[0] > before_size
    # the drawn box is that many pixels wide (the rectangle spans pixel edges: size = x1 - x0)
    assert after_shape["x1"] - after_shape["x0"] == pytest.approx(expected.size[0], abs=1e-6)
    assert after_shape != before_shape


def test_position_slider_moves_box(rf_page):
    page = rf_page
    before = _rf_shape(page)
    col = int(page.locator(".rf-col .widget-readout").inner_text())
    layers = int(page.locator(".rf-layers .widget-readout").inner_text())
    stride = receptive_field(build_conv_stack(replace(ReceptiveFieldApp.DEFAULT, layers=layers))).output.stride[1]
    start = time.perf_counter()
    _press(page, "rf-col", "ArrowLeft", 5)
    # moving the output column by 5 moves the box by 5 effective strides of input pixels
    _wait_for_box(page, before["x0"] - 5 * stride, before["x1"] - 5 * stride)
    TIMINGS["position slider (5 key presses) to final plot (s)"] = time.perf_counter() - start
    assert int(page.locator(".rf-col .widget-readout").inner_text()) == col - 5
    assert page.errors == []


@pytest.mark.parametrize("width", [1280, 1920])
def test_every_tab_fits_its_width(dashboard_page, width):
    """As in JupyterLab: no figure or control wider than the page's output area, no overlapping titles."""
    from explorer.apps.dashboard import TABS
    from tests.browser.lab import layout_problems

    page = dashboard_page
    page.set_viewport_size({"width": width, "height": 1000})
    try:
        problems = {}
        for title, _factory in TABS:
            open_tab(page, title, ".js-plotly-plot .main-svg >> visible=true")
            page.wait_for_timeout(1000)  # the width watcher's resize event, plotly's relayout
            problems[title] = layout_problems(page)
            page.screenshot(path=str(ARTIFACTS / f"voila-{title.lower().replace(' ', '-')}-{width}.png"),
                            full_page=True)
        assert problems == {title: [] for title, _factory in TABS}
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
        open_tab(page, "Receptive fields", f"{PLOT} .main-svg")


def test_every_app_has_its_tab(dashboard_page):
    from explorer.apps.dashboard import TABS

    titles = dashboard_page.locator(".lm-TabBar-tab .lm-TabBar-tabLabel").all_inner_texts()
    assert titles == [title for title, _factory in TABS] == [
        "Receptive fields", "Attention maps", "Cross-modal", "Cost scaling"]
