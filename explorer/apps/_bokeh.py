"""A bokeh figure as an ipywidget that brings its own BokehJS: renders alike in JupyterLab, Voila and reopened pages.

Why not ``jupyter_bokeh.BokehModel``: its browser view calls ``window.Bokeh.require(...)`` the moment it is created,
so it only works on a page where BokehJS was loaded before, by a separate ``output_notebook()`` output. That output
is sent once per *kernel*, but BokehJS lives in the *page*. JupyterLab breaks the assumption whenever the page and
the kernel part ways: reload the page or open the notebook in another tab while its kernel runs, and re-running
the cell finds the kernel saying "already loaded" to a page that never ran the script ("Cannot read properties of
undefined (reading 'require')"); the load output is also a script that Lab runs only for trusted outputs.

Here the view itself makes sure BokehJS is in its page: if ``window.Bokeh[version]`` is missing it asks the kernel
for the inline BokehJS of the installed bokeh (a custom message, answered once per page; no CDN) and runs it in a
``<script>`` in ``document.head``; then it embeds the figure (``bokeh.embed.json_item``) once its element is in the
document. Browser-side interaction (``CustomJS`` callbacks such as the head view's click-to-isolate) runs as in any
bokeh page. From Python, :meth:`BokehWidget.update` replaces column data and ranges of named models in place.
"""

from __future__ import annotations

import functools

import anywidget
import numpy as np
import traitlets

from explorer.apps._js import LIBRARY_LOADER

__all__ = ["BokehWidget", "bokehjs_source"]

_ESM = LIBRARY_LOADER + r"""
// BokehJS registers itself as window.Bokeh[version]; several versions may share a page.
function loadBokeh(model) {
  const version = model.get("version");
  return loadLibrary(model, `BokehJS ${version}`, "need-bokehjs", "bokehjs",
                     () => (window.Bokeh && window.Bokeh[version]) || null);
}

function apply(doc, model) {
  const sources = model.get("sources") || {};
  for (const [name, columns] of Object.entries(sources)) {
    const source = doc.get_model_by_name(name);
    if (source == null) continue;
    source.selected.indices = [];
    source.data = columns;
  }
  const ranges = model.get("ranges") || {};
  for (const [name, [start, end]] of Object.entries(ranges)) {
    const range = doc.get_model_by_name(name);
    if (range != null) range.setv({start, end});
  }
}

async function render({model, el}) {
  el.classList.add("explorer-bokeh");
  let views = null;
  let generation = 0;
  const show = async () => {
    const mine = ++generation;
    try {
      const Bokeh = await loadBokeh(model);
      await inDocument(el);
      if (mine !== generation) return;
      if (views) views.clear();
      el.replaceChildren();
      const spec = JSON.parse(JSON.stringify(model.get("spec")));  // bokeh mutates what it is given
      const target = document.createElement("div");
      el.appendChild(target);
      views = await Bokeh.embed.embed_item(spec, target);
      const doc = [...views][0].model.document;
      apply(doc, model);
      el.__bokeh = {Bokeh, doc, views};  // for tests and debugging: the live document of this view
      el.dataset.rendered = String(mine);
      delete el.dataset.error;
      model.send({type: "rendered"});  // apps draw their other figures once their first one is on the page
    } catch (error) {
      el.dataset.error = String(error);
      el.textContent = `The head view could not be drawn: ${error}`;
      console.error(error);
    }
  };
  const onData = () => { if (el.__bokeh) apply(el.__bokeh.doc, model); };
  model.on("change:spec", show);
  model.on("change:sources", onData);
  model.on("change:ranges", onData);
  await show();
  return () => {
    model.off("change:spec", show);
    model.off("change:sources", onData);
    model.off("change:ranges", onData);
    if (views) views.clear();
  };
}

export default {render};
"""


@functools.lru_cache(maxsize=1)
def bokehjs_source() -> str:
    """The installed bokeh's own BokehJS (``bokeh.min.js``), as ``bokeh.resources.INLINE`` embeds it."""
    from bokeh.resources import Resources

    return Resources(mode="inline", components=["bokeh"]).js_raw[0]


class BokehWidget(anywidget.AnyWidget):
    """A bokeh figure (any ``LayoutDOM``) shown as a widget.

    Args:
        figure: the bokeh model to show. Name the data sources and ranges you will :meth:`update`
            (``ColumnDataSource(name=...)``, ``Range1d(name=...)``).

    The figure is serialised once (and again by :meth:`show`); later changes to the Python objects do not reach
    the page, :meth:`update` does.
    """

    _esm = _ESM
    spec = traitlets.Dict().tag(sync=True)       # bokeh.embed.json_item of the figure
    version = traitlets.Unicode().tag(sync=True)  # BokehJS version the spec needs
    sources = traitlets.Dict().tag(sync=True)    # {source name: {column: list}} applied over the spec
    ranges = traitlets.Dict().tag(sync=True)     # {range name: [start, end]}

    def __init__(self, figure, **kwargs) -> None:
        super().__init__(**kwargs)
        import bokeh

        self.version = bokeh.__version__
        self._rendered_handlers: list = []
        self.show(figure)
        self.on_msg(self._on_message)

    def show(self, figure) -> None:
        """Replace the whole figure (re-embedded in the page); pending :meth:`update` data is cleared."""
        from bokeh.embed import json_item
        from bokeh.model import Model

        if not isinstance(figure, Model):
            raise TypeError(f"figure must be a bokeh model (e.g. bokeh.plotting.figure), got {type(figure).__name__}")
        item = json_item(figure)
        with self.hold_sync():
            self.sources, self.ranges = {}, {}
            self.spec = item

    def update(self, sources: dict | None = None, ranges: dict | None = None) -> None:
        """Replace column data of named sources and ``(start, end)`` of named ranges, in place in the page."""
        with self.hold_sync():
            if sources is not None:
                self.sources = {name: {k: v.tolist() if isinstance(v, np.ndarray) else list(v)
                                       for k, v in columns.items()} for name, columns in sources.items()}
            if ranges is not None:
                self.ranges = {name: [float(start), float(end)] for name, (start, end) in ranges.items()}

    def on_rendered(self, callback) -> None:
        """Call ``callback()`` each time a page reports it has embedded the figure (first shown, or re-shown)."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self._rendered_handlers.append(callback)

    def _on_message(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("type") == "need-bokehjs":
            self.send({"type": "bokehjs", "source": bokehjs_source()})
        elif isinstance(content, dict) and content.get("type") == "rendered":
            for handler in list(self._rendered_handlers):
                handler()
