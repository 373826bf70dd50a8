"""The dashboard's "HTML snapshot" in a real browser: the downloaded page opens offline and shows the live numbers.

The snapshot (a data: link of the export bar) is written to a file and opened in a fresh browser context that is
offline and aborts every request that is not for a file; plotly and bokeh must draw from the inlined libraries,
and the numbers they hold must be the ones the live tab holds. Both pages are compared through what plotly.js and
BokehJS hold after drawing (``gd._fullData``: the traces as plotly.js drew them, typed arrays decoded in both the
live view and the snapshot; the bokeh document's data sources).
"""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from explorer.viz.attention import HEAD_VIEW_NAMES
from tests.browser.conftest import TIMINGS, open_tab

pytestmark = pytest.mark.browser

RF_PLOT = ".rf-figure.js-plotly-plot"
ATTN_PLOT = ".attn-heatmap.js-plotly-plot"
HEAD_VIEW = ".attn-head-view"

# one trace of a drawn plotly graph div as plain JSON: typed arrays (and nested ones) become arrays
_TRACES = """(el) => {
  const plain = (v) => ArrayBuffer.isView(v) ? Array.from(v) : Array.isArray(v) ? v.map(plain) : v;
  return el._fullData.map(t => ({type: t.type, z: t.type === "heatmap" ? plain(t.z) : null,
                                 x: t.type === "scatter" ? plain(t.x) : null, y: t.type === "scatter" ? plain(t.y) : null}));
}"""

_LINES = f"""(doc) => {{
  const d = doc.get_model_by_name('{HEAD_VIEW_NAMES["lines"]}').data;
  const t = doc.get_model_by_name('{HEAD_VIEW_NAMES["tokens"]}').data;
  const plain = (v) => Array.from(v);
  return {{w: plain(d.w), query: plain(d.query), key: plain(d.key), head: plain(d.head),
           tokens: plain(t[Object.keys(t).find(k => typeof t[k][0] === "string")] || [])}};
}}"""


# BokehJS drew: one document, and a canvas with pixels inside the figure's (shadow-DOM) element
_BOKEH_DRAWN = """() => {
  const deep = (root) => [...root.querySelectorAll("*")].some(
      (el) => (el.tagName === "CANVAS" && el.width > 0) || (el.shadowRoot && deep(el.shadowRoot)));
  const el = document.querySelector(".snapshot-bokeh");
  return !!(window.Bokeh && Bokeh.documents.length === 1 && el && deep(el));
}"""


def _snapshot(page, filename: str, tmp_path):
    """Click "HTML snapshot"; return the downloaded page's path and the seconds until its link appeared."""
    start = time.perf_counter()
    page.locator("button.export-html").click()
    link = page.locator(f".export-links a.export-link[download='{filename}']")
    link.wait_for(state="attached", timeout=120_000)
    seconds = time.perf_counter() - start
    href = link.get_attribute("href")
    prefix = "data:text/html;base64,"
    assert href.startswith(prefix)
    path = tmp_path / filename
    path.write_bytes(base64.b64decode(href[len(prefix):]))
    return path, seconds


def _offline_page(browser, path):
    """A fresh, offline context that aborts every non-file request; the snapshot opened in it."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_offline(True)
    requested: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith("file:"):
            request_route.continue_()
        else:
            requested.append(url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.as_uri())
    return context, page, requested, errors


def _traces(page, selector: str) -> list[dict]:
    return page.locator(selector).evaluate(_TRACES)


def _assert_same_traces(live: list[dict], snap: list[dict]) -> None:
    assert [t["type"] for t in snap] == [t["type"] for t in live]
    for a, b in zip(live, snap):
        for key in ("z", "x", "y"):
            if a[key] is not None:
                np.testing.assert_allclose(np.asarray(b[key], dtype=float), np.asarray(a[key], dtype=float),
                                           rtol=0, atol=1e-9, err_msg=key)


def test_receptive_field_snapshot_opens_offline_with_the_live_numbers(dashboard_page, browser, tmp_path):
    page = open_tab(dashboard_page, "Receptive fields", f"{RF_PLOT} .main-svg")
    path, seconds = _snapshot(page, "receptive-fields-snapshot.html", tmp_path)
    TIMINGS["export: receptive-field snapshot link (s)"] = seconds
    live = _traces(page, RF_PLOT)
    live_shape = page.evaluate(f"() => document.querySelector('{RF_PLOT}').layout.shapes[0]")
    layers = page.locator(".rf-layers .widget-readout").inner_text()
    start = time.perf_counter()
    context, snap, requested, errors = _offline_page(browser, path)
    try:
        snap.wait_for_selector(".snapshot-plotly.js-plotly-plot svg.main-svg", timeout=30_000)
        TIMINGS["export: receptive-field snapshot drawn offline (s)"] = time.perf_counter() - start
        assert any(t["type"] == "heatmap" for t in live)
        _assert_same_traces(live, _traces(snap, ".snapshot-plotly.js-plotly-plot"))
        shape = snap.evaluate("() => document.querySelector('.snapshot-plotly.js-plotly-plot').layout.shapes[0]")
        for key in ("x0", "x1", "y0", "y1"):
            assert shape[key] == pytest.approx(live_shape[key], abs=1e-9)
        controls = snap.evaluate("() => JSON.parse(document.getElementById('snapshot-controls').textContent)")
        assert controls["conv layers"] == layers.strip()
        assert requested == [] and errors == []
    finally:
        context.close()


def test_attention_snapshot_draws_plotly_and_bokeh_offline(dashboard_page, browser, tmp_path):
    page = open_tab(dashboard_page, "Attention maps", f"{ATTN_PLOT} .main-svg", timeout=180_000)
    # the matrix replaces its "computing …" placeholder (a figure without traces) right after the head view
    page.wait_for_function(f"() => document.querySelector('{ATTN_PLOT}')?.data?.length > 0", timeout=120_000)
    page.wait_for_function(f"() => {{ const el = document.querySelector('{HEAD_VIEW}');"
                           "return !!(el && el.dataset.rendered && el.__bokeh); }", timeout=60_000)
    path, seconds = _snapshot(page, "attention-maps-snapshot.html", tmp_path)
    TIMINGS["export: attention snapshot link (s)"] = seconds
    live = _traces(page, ATTN_PLOT)
    live_lines = page.evaluate(f"(sel) => ({_LINES})(document.querySelector(sel).__bokeh.doc)", HEAD_VIEW)
    context, snap, requested, errors = _offline_page(browser, path)
    try:
        target = snap.locator("script.snapshot-data[data-name='attn-heatmap']").get_attribute("data-target")
        snap.wait_for_selector(f"#{target} svg.main-svg", timeout=30_000)
        _assert_same_traces(live, _traces(snap, f"#{target}"))
        snap.wait_for_function(_BOKEH_DRAWN, timeout=30_000)
        snap_lines = snap.evaluate(f"() => ({_LINES})(Bokeh.documents[0])")
        assert len(live_lines["w"]) > 0 and snap_lines["tokens"] == live_lines["tokens"]
        for key in ("w", "query", "key", "head"):
            np.testing.assert_allclose(snap_lines[key], live_lines[key], rtol=0, atol=1e-9, err_msg=key)
        assert requested == [] and errors == []
    finally:
        context.close()
