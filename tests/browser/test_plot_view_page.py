"""PlotView's page side in a bare Chromium page (no server, no kernel): the widget's own ES module renders into a div
from a stand-in model holding ``PlotView.get_state()``, and its drawings are compared with plotly.js drawing the
same figures from scratch (``Plotly.newPlot`` in a second div, the independent reference).

* A change of only shapes or annotations is drawn with ``Plotly.relayout`` of those arrays (the model view's frame,
  the long-range distance line), any other change with ``Plotly.react``; either way the page ends up drawing what a
  fresh ``newPlot`` of the new figure draws (shape and annotation geometry, trace data).
* Base64 typed arrays decode to the numbers numpy sent, float32 and integer alike.
* The figures drawn with fixed margins (automargin off: :func:`explorer.viz._spec.quick_axes`) keep every label and
  title inside the figure, at a narrow and a wide page, with inputs that give long tick labels.
"""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from explorer.apps._plot import PlotView, plotlyjs_source, plotlyjs_version
from explorer.viz.receptive_field import receptive_field_figure
from explorer.viz.speech import attention_figure, spectrogram_figure
from tests.viz.test_figure_specs import plain

pytestmark = pytest.mark.browser

# the stand-in model: get/on/off/send as anywidget gives them; window.__setState(patch) changes the state and fires
# change:revision as a kernel update would
PAGE_JS = """
async ([esm, state, version]) => {
  window.__explorerPlotly = {[version]: window.Plotly};
  const handlers = {};
  const model = {
    get: (key) => state[key],
    on: (event, fn) => { (handlers[event] = handlers[event] || []).push(fn); },
    off: (event, fn) => { handlers[event] = (handlers[event] || []).filter((f) => f !== fn); },
    send: () => {},
  };
  if (!window.__calls) {
    window.__calls = {react: 0, relayout: 0};
    for (const name of ["react", "relayout"]) {
      const original = window.Plotly[name];
      window.Plotly[name] = function (...args) { window.__calls[name] += 1; return original.apply(this, args); };
    }
  }
  window.__setState = (patch) => {
    Object.assign(state, patch);
    for (const fn of handlers["change:revision"] || []) fn();
  };
  const url = URL.createObjectURL(new Blob([esm], {type: "text/javascript"}));
  const widget = (await import(url)).default;
  // a fresh element per view (as a page gives each view its own)
  const old = document.getElementById("view");
  window.__el = document.createElement("div");
  window.__el.id = "view";
  window.__el.style.width = "1000px";
  old.replaceWith(window.__el);
  await widget.render({model, el: window.__el});
}
"""

# what a drawing shows: shape and annotation geometry as plotly laid it out, the data, the drawn shape paths
DRAWN_JS = """
(el) => ({
  shapes: (el._fullLayout.shapes || []).map((s) => [s.type, s.xref, s.yref, s.x0, s.x1, s.y0, s.y1]),
  annotations: (el._fullLayout.annotations || []).map((a) => [a.text, a.x, a.y]),
  paths: Array.from(el.querySelectorAll(".shapelayer path")).map((p) => p.getAttribute("d")),
  data: el.data.map((t) => JSON.parse(JSON.stringify(t, (k, v) => ArrayBuffer.isView(v) ? Array.from(v) : v))),
})
"""

REFERENCE_JS = """
async ([figure, config]) => {
  const el = document.getElementById("reference");
  await Plotly.newPlot(el, figure.data, figure.layout, config);
  return el;
}
"""


@pytest.fixture(scope="module")
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # standards mode, as JupyterLab and Voila pages are (in quirks mode plotly's 100%-high container takes the window)
    page.set_content("<!DOCTYPE html><html><body><div id='view' style='width:1000px'></div>"
                     "<div id='reference' style='width:1000px'></div></body></html>")
    page.add_script_tag(content=plotlyjs_source())
    yield page
    context.close()
    assert not errors, errors


def _render(page, view: PlotView) -> None:
    state = {key: value for key, value in view.get_state().items()
             if key in ("traces", "frame", "config", "revision", "version", "placeholder")}
    page.evaluate(PAGE_JS, [PlotView._esm, state, plotlyjs_version()])
    page.wait_for_function("() => window.__el.dataset.revision === '%d'" % view.revision, timeout=30_000)


def _push(page, view: PlotView) -> None:
    """Send the view's current state to the page as a kernel update would; wait until it is drawn."""
    page.evaluate("(s) => window.__setState(s)", {"traces": view.traces, "frame": view.frame,
                                                   "revision": view.revision, "placeholder": view.placeholder})
    page.wait_for_function("(r) => window.__el.dataset.revision === String(r)", arg=view.revision, timeout=30_000)


def _drawn(page, selector: str) -> dict:
    return page.evaluate(f"() => ({DRAWN_JS})(document.querySelector('{selector}'))")


def _reference(page, figure: go.Figure) -> dict:
    """plotly.js drawing ``figure`` from scratch in the second div, given plain number lists (no typed arrays, so
    the widget's decoding is not part of the reference)."""
    page.evaluate(REFERENCE_JS, [_plain(figure.to_plotly_json()), {"displaylogo": False, "responsive": False}])
    return _drawn(page, "#reference")


def _plain(value):
    """Numbers as plain lists: plotly's base64 typed arrays decoded by numpy (tests.viz.test_figure_specs.plain)."""
    return json.loads(json.dumps(plain(value), default=lambda array: array.tolist()))


def _calls(page) -> dict:
    return page.evaluate("() => ({...window.__calls})")


def _figure(z: np.ndarray, line_x: float, note: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=z, colorscale="Blues"))
    fig.add_shape(type="line", x0=line_x, x1=line_x, y0=0, y1=1, xref="x", yref="y domain",
                  line={"color": "#444", "width": 1})
    fig.add_annotation(text=note, x=line_x, y=1.02, xref="x", yref="y domain", showarrow=False)
    return fig.update_layout(height=300, width=None, margin={"l": 40, "r": 10, "t": 30, "b": 30})


def test_shape_moves_are_relayouts_and_draw_what_newplot_draws(page):
    rng = np.random.default_rng(3)
    z = rng.random((6, 9)).astype(np.float32)
    view = PlotView(_figure(z, 2.0, "d = 2"))
    _render(page, view)
    page.wait_for_timeout(300)  # the view's ResizeObserver runs Plots.resize (autosize) once it is laid out
    first = _drawn(page, "#view")
    assert first == _reference(page, _figure(z, 2.0, "d = 2"))
    np.testing.assert_array_equal(np.asarray(first["data"][0]["z"], dtype=np.float32), z)  # bit-exact float32

    # only the line and its label move: relayout, no react
    before = _calls(page)
    moved = _figure(z, 6.5, "d = 6.5")
    view.update(moved)
    _push(page, view)
    after = _calls(page)
    assert (after["relayout"] - before["relayout"], after["react"] - before["react"]) == (1, 0)
    drawn = _drawn(page, "#view")
    assert drawn == _reference(page, moved)
    assert drawn["shapes"][0][3:5] == [6.5, 6.5] and drawn["annotations"][0] == ["d = 6.5", 6.5, 1.02]

    # new data: react
    z2 = rng.random((6, 9)).astype(np.float32)
    changed = _figure(z2, 6.5, "d = 6.5")
    view.update(changed)
    _push(page, view)
    assert _calls(page)["react"] - after["react"] == 1
    drawn = _drawn(page, "#view")
    assert drawn == _reference(page, changed)
    np.testing.assert_array_equal(np.asarray(drawn["data"][0]["z"], dtype=np.float32), z2)

    # a layout change beyond shapes (the title): react again, not a relayout of the shapes alone
    titled = _figure(z2, 1.0, "d = 1").update_layout(title="moved")
    view.update(titled)
    _push(page, view)
    assert _calls(page)["react"] - after["react"] == 2
    assert _drawn(page, "#view") == _reference(page, titled)


def test_integer_and_float_arrays_decode_to_numpy_values(page):
    rng = np.random.default_rng(5)
    values = {"f8": rng.normal(size=(5, 7)), "f4": rng.normal(size=(4, 3)).astype(np.float32),
              "u1": rng.integers(0, 255, size=(3, 8), dtype=np.uint8),
              "i4": rng.integers(-2**31, 2**31 - 1, size=(2, 5), dtype=np.int32)}
    for dtype, z in values.items():
        view = PlotView(go.Figure(go.Heatmap(z=z)).update_layout(height=200))
        _render(page, view)
        drawn = np.asarray(_drawn(page, "#view")["data"][0]["z"], dtype=z.dtype)
        np.testing.assert_array_equal(drawn, z, err_msg=dtype)  # exact: the bytes numpy sent


# every <text> of the figure must lie inside its SVG (1 px of rounding allowed)
OUTSIDE_JS = """
(el) => {
  const box = el.querySelector(".main-svg").getBoundingClientRect();
  const out = [];
  for (const t of el.querySelectorAll("text")) {
    const r = t.getBoundingClientRect();
    if (!r.width || !t.textContent.trim()) continue;
    if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1)
      out.push(`${t.textContent.slice(0, 30)} at [${Math.round(r.left - box.left)}, ${Math.round(r.right - box.left)}]`
               + ` x [${Math.round(r.top - box.top)}, ${Math.round(r.bottom - box.top)}] of ${box.width} x ${box.height}`);
  }
  return out;
}
"""


def _fixed_margin_figures() -> dict[str, go.Figure]:
    """The figures drawn with automargin off, with inputs that give their longest labels."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)  # four-digit pixel numbers do not occur;
    erf = rng.random((480, 640))                                      # three digits on both axes do
    erf /= erf.sum()
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "again"]
    starts = np.linspace(0.1, 2.6, len(words))
    tokens = list("the quick brown fox jumps over the lazy dog again") + ["<eot>"]
    values = rng.random((len(tokens), 150))
    path = np.arange(len(tokens))
    return {
        "receptive field": receptive_field_figure(image, erf, ((200, 280), (250, 330)), ((210, 270), (260, 320)),
                                                  (240, 290)),
        "spectrogram": spectrogram_figure(rng.normal(size=(80, 300)), words, starts, starts + 0.2, starts + 0.01,
                                          starts + 0.22, title="“the quick brown fox” — a long title for the figure"),
        "speech attention": attention_figure(values, tokens, path, path * 3, title="alignment matrix (L2H4, L2H1)",
                                             colorbar="standardised"),
    }


@pytest.mark.parametrize("width", [640, 1400])
def test_fixed_margins_hold_every_label(page, width):
    problems = {}
    for name, figure in _fixed_margin_figures().items():
        layout = figure.layout.to_plotly_json()
        axes = [layout[key] for key in layout if key.startswith(("xaxis", "yaxis"))]
        assert axes and all(axis.get("automargin") is False for axis in axes), f"{name}: automargin is not off"
        page.evaluate("(w) => { document.getElementById('reference').style.width = w + 'px'; }", width)
        _reference(page, figure)
        outside = page.evaluate(f"() => ({OUTSIDE_JS})(document.getElementById('reference'))")
        if outside:
            problems[name] = outside
    assert not problems, problems


def test_a_waiting_view_is_a_text_box_until_its_first_figure(page):
    view = PlotView.waiting(260, text="computing …")
    _render(page, view)
    shown = page.evaluate("""() => ({svg: !!window.__el.querySelector('.main-svg'), text: window.__el.innerText,
                                    height: window.__el.getBoundingClientRect().height,
                                    placeholder: window.__el.dataset.placeholder})""")
    assert shown == {"svg": False, "text": "computing …", "height": 260, "placeholder": "computing …"}
    z = np.arange(6, dtype=np.float32).reshape(2, 3)
    figure = go.Figure(go.Heatmap(z=z)).update_layout(height=260)
    view.update(figure)
    _push(page, view)
    drawn = _drawn(page, "#view")
    assert drawn == _reference(page, figure)
    assert page.evaluate("() => [!!window.__el.querySelector('.main-svg'), window.__el.dataset.placeholder]") == \
        [True, None]
