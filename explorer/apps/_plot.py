"""A plotly figure as a light ipywidget whose state *is* the figure: one update policy for every app.

Why not plotly's ``FigureWidget``
---------------------------------
Two measured problems, both in plotly 7.1's ``FigureWidget`` (an anywidget):

* **Each one carries plotly.js.** Its ``_esm`` trait holds the whole 4.96 MB widget bundle as a string, so every
  ``FigureWidget`` sends 5 MB down the websocket and the page evaluates a fresh copy of plotly.js for it (anywidget
  imports each model's ``_esm`` from its own blob URL). The dashboard shows seven plotly figures: 35 MB and seven
  plotly.js evaluations per visitor, and redrawing a figure by replacing the widget paid it again.
* **In-place edits are transient and get lost.** ``fig.data[0].z = ...`` is sent as a message trait that is set and
  at once reset to ``None`` (``_py2js_restyle``). Only views that are already rendered and listening apply it. The
  state a view is *built* from (``_widget_data`` / ``_widget_layout``) is the figure as it was at construction:
  the kernel never updates it (it deep-copies the figure only in ``__init__`` and ``_repr_mimebundle_``, and a figure
  inside a Box never goes through the latter), and the browser's ``FigureModel.do_restyle`` applies the edit to a
  deserialised *copy* of ``_widget_data`` that it then drops. So an edit that arrives while a view is still loading
  (the 5 MB bundle takes a second or more to import), and every edit before a page reload, a reopened notebook or a
  second view, is lost: the page shows the construction-time figure while the kernel holds the new one. That is
  what the cost and cross-modal browser tests had caught.

Here the synced state is the figure itself (``fig.to_json()``: data and layout, numeric arrays as plotly's base64
typed arrays), replaced whole on :meth:`PlotView.update`, with a revision number. The browser draws the latest state
with ``Plotly.react`` (``Plotly.relayout`` when only shapes, annotations or images changed); draws are serialised
and coalesced (a view that falls behind skips to the newest revision), and any view created later, after a reload
or in a second tab, is built from the current state. Nothing is ever
"set and reset", so there is nothing to lose: the last update is what every view shows. Data and layout are
separate traits (``traces``, ``frame``) and :meth:`update` sends only the one whose JSON changed, so moving a
selection frame does not resend the heatmaps.

plotly.js itself (the installed plotly's own ``plotly.min.js``, no CDN) is sent once per page: the first view that
finds no ``Plotly`` of the right version asks the kernel for it with a custom message and runs it; every other view
on the page waits for the same promise.

Browser-side hooks for tests: the view element is the plotly graph div (class ``js-plotly-plot``, with ``el.data``
and ``el.layout``, numeric arrays decoded to typed arrays), and ``el.dataset.revision`` is the revision drawn last.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import anywidget
import plotly
import plotly.graph_objects as go
import traitlets
from _plotly_utils.utils import is_homogeneous_array, is_skipped_key, to_typed_array_spec
from plotly.io.json import to_json_plotly

from explorer.apps._js import LIBRARY_LOADER

__all__ = ["PlotView", "plotlyjs_source", "plotlyjs_version"]

log = logging.getLogger("explorer.apps")

_ESM = LIBRARY_LOADER + r"""
// plotly.min.js ends with window.Plotly = Plotly: keep ours apart and leave any other plotly.js of the page alone.
function loadPlotly(model) {
  const version = model.get("version");
  const key = `plotly.js ${version}`;
  window.__explorerPlotly = window.__explorerPlotly || {};
  if (window.__explorerPlotly[version]) return Promise.resolve(window.__explorerPlotly[version]);
  const before = window.Plotly;
  return loadLibrary(model, key, "need-plotlyjs", "plotlyjs", () => {
    if (window.__explorerPlotly[version]) return window.__explorerPlotly[version];
    if (window.Plotly && window.Plotly !== before && window.Plotly.version === version) {
      window.__explorerPlotly[version] = window.Plotly;
      if (before !== undefined) window.Plotly = before;
      return window.__explorerPlotly[version];
    }
    return null;
  });
}

// base64 to bytes: the browser's own decoder where it has one, else a plain loop (Uint8Array.from(atob(text), fn)
// calls a function per byte: 6 ms of a receptive-field redraw's 7 ms of decoding)
function base64Bytes(text) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// Layout parts plotly.js redraws on their own (its "arraydraw" components). When only they changed, Plotly.relayout
// of those arrays redraws only them, where Plotly.react recomputes every trace: moving the model view's frame over
// its 144 heatmaps took 130 ms with react and 1 ms this way; the long-range curves' distance line likewise.
const REDRAWN_ALONE = new Set(["shapes", "annotations", "images"]);

// {key: new array} for a layout change that touches only REDRAWN_ALONE parts, null for any other change.
function componentEdits(before, after) {
  if (!before) return null;
  const edits = {};
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    if (before[key] === after[key] || JSON.stringify(before[key]) === JSON.stringify(after[key])) continue;
    if (!REDRAWN_ALONE.has(key) || !Array.isArray(after[key])) return null;
    edits[key] = structuredClone(after[key]);
  }
  return edits;
}

const DTYPES = {f8: Float64Array, f4: Float32Array, i1: Int8Array, u1: Uint8Array, i2: Int16Array,
                u2: Uint16Array, i4: Int32Array, u4: Uint32Array};

function reshape(flat, shape) {
  if (shape.length <= 1) return flat;
  const [n, ...rest] = shape;
  const size = rest.reduce((a, b) => a * b, 1);
  const rows = [];
  for (let i = 0; i < n; i++) {
    const part = flat.subarray(i * size, (i + 1) * size);
    rows.push(rest.length === 1 && shape.length > 2 ? Array.from(part) : reshape(part, rest));
  }
  return rows;
}

// plotly.py writes numpy arrays as {dtype, bdata (base64), shape}; decode them to (nested) typed arrays so that
// el.data holds numbers, as plotly.js's own users and our tests expect.
function decode(value) {
  if (Array.isArray(value)) return value.map(decode);
  if (value !== null && typeof value === "object") {
    if (typeof value.bdata === "string" && typeof value.dtype === "string") {
      const bytes = base64Bytes(value.bdata);
      let flat;
      if (value.dtype === "i8" || value.dtype === "u8") {
        const Big = value.dtype === "i8" ? BigInt64Array : BigUint64Array;
        flat = Float64Array.from(new Big(bytes.buffer), Number);
      } else {
        flat = new DTYPES[value.dtype](bytes.buffer);
      }
      const shape = value.shape === undefined ? [flat.length] : String(value.shape).split(",").map(Number);
      return reshape(flat, shape);
    }
    const out = {};
    for (const [key, item] of Object.entries(value)) out[key] = decode(item);
    return out;
  }
  return value;
}

async function render({model, el}) {
  el.classList.add("explorer-plot");
  const cache = {traces: [null, null], frame: [null, null]};  // [json text, decoded]
  let previous = new Map();  // one trace's JSON -> its decoded object, from the last update
  const parsed = (key) => {
    const text = model.get(key);
    if (cache[key][0] === text) return cache[key][1];
    let value = JSON.parse(text || (key === "traces" ? "[]" : "{}"));
    if (key === "traces") {
      // A trace whose JSON did not change keeps its decoded object: no base64 decoding again, and Plotly.react,
      // which compares data arrays by reference, does not recompute it (the photo under a moving box).
      const next = new Map();
      value = value.map((trace) => {
        const json = JSON.stringify(trace);
        const decoded = previous.get(json) || decode(trace);
        next.set(json, decoded);
        return decoded;
      });
      previous = next;
    } else {
      value = decode(value);
    }
    cache[key] = [text, value];
    return value;
  };
  let queue = Promise.resolve();
  let drawn = null;  // what the last draw showed: {traces: JSON text, config: JSON text, frame: decoded layout}
  let Plotly = null;
  let clicks = false;
  const draw = () => {
    queue = queue.then(async () => {
      const revision = model.get("revision");
      if (String(revision) === el.dataset.revision) return;  // drawn already (or a newer draw covered it)
      const waiting = model.get("placeholder");
      if (waiting) {  // a box with the text, no plotly.js: the page's first figures are drawn sooner
        const box = document.createElement("div");
        box.className = "explorer-plot-placeholder";
        box.style.cssText = "display:flex;align-items:center;justify-content:center;color:#888;font-size:13px";
        box.style.height = `${parsed("frame").height || 300}px`;
        box.textContent = waiting;
        el.replaceChildren(box);
        el.dataset.placeholder = waiting;
        el.dataset.revision = String(revision);
        return;
      }
      if (el.dataset.placeholder !== undefined) {
        el.replaceChildren();
        delete el.dataset.placeholder;
      }
      if (!Plotly) Plotly = await loadPlotly(model);  // asked for with the first real figure
      const now = {traces: model.get("traces"), config: JSON.stringify(model.get("config")), frame: parsed("frame")};
      const edits = drawn && drawn.traces === now.traces && drawn.config === now.config
        ? componentEdits(drawn.frame, now.frame) : null;
      if (edits) {
        if (Object.keys(edits).length) await Plotly.relayout(el, edits);
      } else {
        // plotly writes into the layout it is given (autoranges, sizes): a copy keeps the decoded one clean
        await Plotly.react(el, parsed("traces"), structuredClone(now.frame), {...model.get("config")});
      }
      drawn = now;
      el.dataset.revision = String(revision);
      delete el.dataset.error;
      if (!clicks) {
        clicks = true;
        el.on("plotly_click", (event) => {
          const p = event && event.points && event.points[0];
          if (p) model.send({type: "click", curve: p.curveNumber, point: p.pointNumber ?? p.pointNumbers ?? null,
                             x: p.x ?? null, y: p.y ?? null});
        });
      }
    }).catch((error) => {
      drawn = null;  // the next draw starts afresh
      el.dataset.error = String(error);
      if (!Plotly) el.textContent = `The figure could not be drawn: ${error}`;
      console.error(error);
    });
    return queue;
  };
  let rendered = false;
  const onRevision = () => { if (rendered) draw(); };
  model.on("change:revision", onRevision);
  let frame = null;
  const observer = new ResizeObserver(() => {
    if (frame !== null || !Plotly || el.dataset.revision === undefined || el.dataset.placeholder !== undefined) {
      return;
    }
    frame = requestAnimationFrame(() => {
      frame = null;
      if (el.isConnected && el.offsetWidth > 0) Plotly.Plots.resize(el).catch(() => {});
    });
  });
  try {
    await inDocument(el);
    observer.observe(el);
    rendered = true;
    await draw();
  } catch (error) {
    el.dataset.error = String(error);
    el.textContent = `The figure could not be drawn: ${error}`;
    console.error(error);
  }
  return () => {
    model.off("change:revision", onRevision);
    observer.disconnect();
    if (Plotly) Plotly.purge(el);
  };
}

export default {render};
"""

_CONFIG = {"displaylogo": False, "responsive": False}  # our ResizeObserver follows the container, not the window


@functools.lru_cache(maxsize=1)
def plotlyjs_source() -> str:
    """The installed plotly's own ``plotly.min.js`` (the same file ``plotly.offline`` inlines; no CDN)."""
    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def plotlyjs_version() -> str:
    """Version of that plotly.js (``Plotly.version`` in the browser)."""
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


class PlotView(anywidget.AnyWidget):
    """A plotly figure shown as a widget; :meth:`update` replaces the figure in every view of it.

    Args:
        figure: the figure to show (a ``go.Figure``, or a spec dict: see :meth:`update`). Give it no layout width:
            it takes its container's.
        css: a class name for the element (tests and styles find the figure by it).

    ``view.figure`` is the figure shown last (a plain ``go.Figure``: exports and tests read it; after a spec update it
    is built from the spec, with plotly's validation, when first read); change what is shown with :meth:`update`, not
    by editing it.
    """

    _esm = _ESM
    traces = traitlets.Unicode("[]").tag(sync=True)   # JSON of the figure's traces (data)
    frame = traitlets.Unicode("{}").tag(sync=True)    # JSON of its layout (``layout`` is the widget's CSS box)
    config = traitlets.Dict().tag(sync=True)          # plotly.js config
    revision = traitlets.Int(0).tag(sync=True)        # increases with every update; the page draws the latest
    placeholder = traitlets.Unicode("").tag(sync=True)  # text shown (no plotly.js) until the first update
    version = traitlets.Unicode().tag(sync=True)      # plotly.js version the figure needs

    def __init__(self, figure: go.Figure | dict, css: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.version = plotlyjs_version()
        self.config = dict(_CONFIG)
        self._click_handlers: list[Callable[[int, int | None], object]] = []
        self._figure: go.Figure | None = go.Figure()
        self._spec: dict | None = None
        self._sent: tuple[dict, dict] = ({}, {})  # traces / layout entries of the spec sent last: id -> (part, JSON)
        self.update(figure)
        if css:
            self.add_class(css)
        self.on_msg(self._on_message)

    @property
    def figure(self) -> go.Figure:
        """The figure shown last, as a ``go.Figure`` (built, with validation, from a spec on first access)."""
        if self._figure is None:
            self._figure = go.Figure(self._spec)
        return self._figure

    def update(self, figure: go.Figure | dict) -> None:
        """Show ``figure`` instead of the current one (in every open view, and in any view opened later).

        ``figure`` is a ``go.Figure`` (validated by plotly as it was built) or, on the fast path of a control, a
        spec: a plain dict ``{"data": [...], "layout": {...}}`` from :mod:`explorer.viz._spec` (numpy arrays
        allowed), sent as it is, without plotly's validation. A spec must not be mutated afterwards: a data list or
        layout dict that is the same object as the one sent last is not encoded again.
        """
        if isinstance(figure, go.Figure):
            spec = figure.to_dict()  # numpy arrays become plotly's base64 typed arrays
            data, layout = to_json_plotly(spec["data"]), to_json_plotly(spec["layout"])
            self._figure, self._spec, self._sent = figure, None, ({}, {})
        elif isinstance(figure, dict) and set(figure) == {"data", "layout"}:
            data, layout = self._encoded(figure["data"], 0), self._encoded(figure["layout"], 1)
            self._figure, self._spec = None, figure
        else:
            raise TypeError(f"figure must be a plotly go.Figure or a figure spec dict with 'data' and 'layout', "
                            f"got {type(figure).__name__}")
        with self.hold_sync():  # one message: the changed parts and the revision together
            if data != self.traces:
                self.traces = data
            if layout != self.frame:
                self.frame = layout
            self.placeholder = ""
            self.revision += 1

    @classmethod
    def waiting(cls, height: int, css: str | None = None, text: str = "computing …") -> PlotView:
        """A view that shows ``text`` in a box ``height`` px high until its first :meth:`update`, drawn without
        plotly.js (which the page loads, if it has not yet, with the first real figure): an app's first figure is
        drawn sooner when the ones still being computed cost the page nothing. Its :attr:`figure` meanwhile has no
        traces, only the text as an annotation (exports leave such figures out)."""
        if isinstance(height, bool) or not isinstance(height, int):
            raise TypeError(f"height must be an int, got {type(height).__name__}")
        if height <= 0:
            raise ValueError(f"height must be positive, got {height}")
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        if not text:
            raise ValueError("text must not be empty")
        view = cls({"data": [], "layout": {"height": height, "xaxis": {"visible": False}, "yaxis": {"visible": False},
                                           "annotations": [{"text": text, "showarrow": False, "x": 0.5, "y": 0.5,
                                                            "xref": "paper", "yref": "paper",
                                                            "font": {"color": "#888"}}]}}, css)
        view.placeholder = text
        return view

    def _encoded(self, value: list | dict, which: int) -> str:
        """JSON of a spec's data list (``which`` 0) or layout dict (1); a trace or layout entry that is the very
        object sent last (a spec is never mutated: :func:`explorer.viz._spec.patch` shares what did not change)
        keeps its JSON, so the photo, the template and unchanged traces are not encoded again."""
        last, parts = self._sent[which], {}

        def encode(part) -> str:
            hit = last.get(id(part))
            text = hit[1] if hit is not None and hit[0] is part else to_json_plotly(_typed_arrays(part))
            parts[id(part)] = (part, text)
            return text

        if which == 0:
            text = "[" + ",".join(encode(trace) for trace in value) + "]"
        else:
            text = "{" + ",".join(f"{json.dumps(key)}:{encode(item)}" for key, item in value.items()) + "}"
        self._sent = (parts, self._sent[1]) if which == 0 else (self._sent[0], parts)
        return text

    def on_click(self, callback: Callable[[int, int | None], object]) -> None:
        """Call ``callback(trace_index, point_index)`` when a visitor clicks a point of the figure."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self._click_handlers.append(callback)

    def _on_message(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "need-plotlyjs":
            self.send({"type": "plotlyjs", "source": plotlyjs_source()})
        elif kind == "click":
            curve, point = content.get("curve"), content.get("point")
            # a page can send anything: only a trace index of this figure reaches the handlers
            n_traces = len(self._spec["data"]) if self._figure is None else len(self._figure.data)
            if isinstance(curve, bool) or not isinstance(curve, int) or not 0 <= curve < n_traces:
                log.warning("plot click ignored: curve %r is not a trace index", curve)
                return
            if isinstance(point, bool) or not isinstance(point, (int, type(None))):
                point = None
            for handler in self._click_handlers:
                handler(curve, point)


def _typed_arrays(value):
    """A copy of a spec part with numpy arrays as plotly's base64 typed arrays (what ``go.Figure.to_dict`` does)."""
    if isinstance(value, dict):
        return {key: (item if is_skipped_key(key) else
                      to_typed_array_spec(item) if is_homogeneous_array(item) else _typed_arrays(item))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_typed_arrays(item) for item in value]
    return value
