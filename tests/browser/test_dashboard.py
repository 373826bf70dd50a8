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

PLOT = ".rf-figure.js-plotly-plot"  # the PlotView element is the plotly graph div
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


def test_fifty_rapid_changes_end_on_the_library_numbers(rf_page):
    """50 key presses as fast as the page takes them, on two sliders: the drawing that stays is the library's for
    the final setting -- field box, centre marker and every ERF pixel -- with nothing lost or stale in between."""
    import numpy as np

    from explorer.analysis import effective_receptive_field
    from explorer.data import load_photo

    page = rf_page
    # linear layers: with ReLUs some positions have no gradient at all (dead units), which the app refuses with a
    # message and no new drawing -- right, but not what this test is about
    activation = page.locator(".rf-control", has_text="activation").locator("select")
    activation.select_option(label="none (linear)")
    page.wait_for_function("() => document.querySelector('.rf-reading')?.dataset.activation === 'none'",
                           timeout=30_000)
    start = time.perf_counter()
    for i in range(25):  # layers up and down, column left and right, interleaved: 50 changes in all
        _press(page, "rf-layers", "ArrowRight" if i % 4 < 2 else "ArrowLeft", 1)
        _press(page, "rf-col", "ArrowLeft" if i % 3 else "ArrowRight", 1)
    # settled: neither the drawn revision (each kernel update bumps it) nor the kernel's reading moved for 2 s
    page.wait_for_function(f"""() => {{
        const now = performance.now();
        const state = document.querySelector('{PLOT}').dataset.revision + document.querySelector('.rf-summary').innerHTML;
        if (state !== window.__lastState) {{ window.__lastState = state; window.__since = now; }}
        return now - window.__since > 2000;
    }}""", polling=100, timeout=120_000)
    TIMINGS["50 rapid slider changes to settled plot (s)"] = time.perf_counter() - start
    layers = int(page.locator(".rf-layers .widget-readout").inner_text())
    col = int(page.locator(".rf-col .widget-readout").inner_text())
    row = int(page.locator(".rf-row .widget-readout").inner_text())
    reading = page.locator(".rf-reading")
    assert page.locator(".rf-reading").get_attribute("data-position") == f"{row},{col}"  # the kernel agrees
    config = replace(ReceptiveFieldApp.DEFAULT, layers=layers, activation="none")
    model = build_conv_stack(config)  # seeded: the same weights as the kernel's
    field = receptive_field(model).output
    (r0, r1), (c0, c1) = field.box((row, col))
    shape = _rf_shape(page)
    assert (shape["x0"], shape["x1"], shape["y0"], shape["y1"]) == pytest.approx(
        (c0 - 0.5, c1 + 0.5, r0 - 0.5, r1 + 0.5), abs=1e-9)
    assert _rf_size(page) == field.size[0]
    erf = effective_receptive_field(model, load_photo("china", 128)[None], position=(row, col))
    drawn = np.array(page.evaluate(f"() => Array.from(document.querySelector('{PLOT}').data[1].z, r => Array.from(r))"))
    # float32 on the page, the same computation here: equal to float32 rounding of values that sum to 1
    np.testing.assert_allclose(drawn, erf.grad.numpy(), rtol=1e-5, atol=1e-9)
    centre = page.evaluate(f"() => {{ const t = document.querySelector('{PLOT}').data[2]; return [t.y[0], t.x[0]]; }}")
    assert centre == pytest.approx([(r0 + r1) / 2, (c0 + c1) / 2], abs=1e-9)
    assert page.locator(".rf-error").count() == 0 and page.errors == []
    activation.select_option(label="ReLU")  # back for the next tests (this position may have no ReLU gradient:
    page.wait_for_function("() => document.querySelector('.rf-reading')?.dataset.activation === 'relu'"  # message)
                           " || document.querySelector('.rf-error') !== null", timeout=30_000)


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
        "Receptive fields", "Attention maps", "Cross-modal", "Cost scaling", "Head to head", "Long range", "Intervene",
        "Speech"]
