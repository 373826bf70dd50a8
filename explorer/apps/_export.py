"""Export any app's view: find its figures and controls by walking its widget tree; an export bar for the dashboard.

An app is anything with a ``widget`` (its top ipywidget). Its figures are the :class:`PlotView` (plotly) and
:class:`BokehWidget` (bokeh) instances under it, its controls the value widgets (sliders, dropdowns, toggles, text)
under it; parts the app hides (``layout.display = "none"`` or ``visibility = "hidden"``) are left out, so what is
exported is what the visitor sees. While the app shows an error message (its last action failed or was refused by
the memory guard: the red block of :func:`explorer.apps._callbacks.error_html`), its figures belong to an earlier
state and nothing is exported.

:class:`ExportBar` turns that into three buttons (PNG, SVG, HTML snapshot) whose results are browser downloads
(``data:`` links): a visitor never names a path, and every click runs through the callback policy.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable, Iterator

import ipywidgets as W

from explorer.apps._bokeh import BokehWidget
from explorer.apps._callbacks import callback, error_html
from explorer.apps._comm_guard import harden
from explorer.apps._plot import PlotView
from explorer.viz.export import download_link, render_figures, snapshot_html

__all__ = ["walk", "find_views", "tab_figures", "find_controls", "shown_error", "bokeh_model", "ExportBar",
           "NOT_OPENED", "NO_FIGURES", "STILL_DRAWING"]

# what error_html writes after the class: the red block every app shows for a failed or refused action
_ERROR_MARK = error_html("x", "").split("'x'", 1)[1].rsplit("</div>", 1)[0].strip()
NOT_OPENED = "Nothing to export yet: open this tab first (its figures are drawn when it is first opened)."
NO_FIGURES = "Nothing to export: this tab shows no figure at the moment."
STILL_DRAWING = "Nothing to export yet: this tab is still computing its figures; try again in a moment."
# value widgets that only display (their value is not a visitor's choice)
_DISPLAY_ONLY = (W.HTML, W.HTMLMath, W.Label, W.IntProgress, W.FloatProgress, W.Valid, W.Image, W.Audio, W.Video)
_VIEW_CLASSES = {"explorer-plot", "explorer-bokeh"}


def _hidden(widget: W.Widget) -> bool:
    layout = getattr(widget, "layout", None)
    return layout is not None and (layout.display == "none" or layout.visibility == "hidden")


def walk(root: W.Widget, *, visible_only: bool = True) -> Iterator[W.Widget]:
    """Every widget under ``root`` (itself included), depth first in display order; each widget once. Hidden
    subtrees are skipped when ``visible_only``."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        widget = stack.pop()
        if id(widget) in seen or not isinstance(widget, W.Widget) or (visible_only and _hidden(widget)):
            continue
        seen.add(id(widget))
        yield widget
        children = getattr(widget, "children", None) if isinstance(widget, W.Box) else None
        if children:
            stack.extend(reversed(children))


def _name(widget: W.Widget, fallback: str) -> str:
    for css in getattr(widget, "_dom_classes", ()):
        if css not in _VIEW_CLASSES:
            return css
    return fallback


def find_views(root: W.Widget) -> dict[str, PlotView | BokehWidget]:
    """``{name: view}`` of the visible figure widgets under ``root``; a name is the view's CSS class (``rf-figure``)
    or ``figure-<i>``."""
    views: dict[str, PlotView | BokehWidget] = {}
    for widget in walk(root):
        if isinstance(widget, (PlotView, BokehWidget)):
            name = base = _name(widget, f"figure-{len(views) + 1}")
            k = 2
            while name in views:
                name, k = f"{base}-{k}", k + 1
            views[name] = widget
    return views


def bokeh_model(view: BokehWidget):
    """The bokeh model a :class:`BokehWidget` shows now: its embedded figure with the data sources and ranges that
    :meth:`BokehWidget.update` replaced in the page applied (a fresh copy; the app's objects are not touched)."""
    from bokeh.document import Document

    spec = view.spec
    doc = Document.from_json(spec["doc"])
    for name, columns in (view.sources or {}).items():
        source = doc.get_model_by_name(name)
        if source is not None:
            source.selected.indices = []
            source.data = {key: list(values) for key, values in columns.items()}
    for name, (start, end) in (view.ranges or {}).items():
        model = doc.get_model_by_name(name)
        if model is not None:
            model.update(start=start, end=end)
    root = doc.get_model_by_id(spec["root_id"])
    doc.remove_root(root)  # json_item embeds a model in a document of its own
    return root


def _drawn(view: PlotView | BokehWidget) -> bool:
    """False for a plotly view that shows no trace: a placeholder ("computing …") until its figure is computed."""
    return not isinstance(view, PlotView) or len(view.figure.data) > 0


def tab_figures(root: W.Widget) -> dict[str, object]:
    """``{name: figure}`` under ``root``: a plotly ``go.Figure`` per :class:`PlotView` (its ``figure``, as shown
    last; placeholders without traces are left out), a bokeh model per :class:`BokehWidget` (:func:`bokeh_model`)."""
    return {name: view.figure if isinstance(view, PlotView) else bokeh_model(view)
            for name, view in find_views(root).items() if _drawn(view)}


def _label(widget: W.Widget, index: int) -> str:
    description = (getattr(widget, "description", "") or "").strip()
    if description:
        return description
    placeholder = (getattr(widget, "placeholder", "") or "").strip()
    if placeholder and placeholder != "\u200b":
        return placeholder
    return _name(widget, f"{type(widget).__name__} {index}")


def _value(widget: W.Widget):
    if isinstance(widget, W.widgets.widget_selection._MultipleSelection):
        return tuple(widget.label)
    if isinstance(widget, W.widgets.widget_selection._Selection):
        return widget.label
    value = widget.value
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def find_controls(root: W.Widget) -> dict[str, object]:
    """``{label: value}`` of the visible controls under ``root`` (sliders, dropdowns, toggles, check boxes, text);
    a selection widget gives the label it shows. Labels are the controls' descriptions (else the placeholder or
    CSS class); a description several controls share is replaced by each one's tooltip where it has one (the
    Intervene grid's "1" … "12" become "ablate layer 1, head 1" …); labels still repeated get `` (2)``, ``(3)``."""
    widgets = [w for w in walk(root) if isinstance(w, W.ValueWidget) and not isinstance(w, _DISPLAY_ONLY)
               and not isinstance(w, (W.Output, W.Play))]
    labels = [_label(w, i + 1) for i, w in enumerate(widgets)]
    counts = Counter(labels)
    # a grid of cells labelled "1", "2", ... (the Intervene tab's head toggles): their tooltips tell them apart
    for i, widget in enumerate(widgets):
        tooltip = (getattr(widget, "tooltip", None) or "").strip()
        if tooltip and counts[labels[i]] > 1:
            labels[i] = tooltip
    controls: dict[str, object] = {}
    for widget, base in zip(widgets, labels):
        label = base
        k = 2
        while label in controls:
            label, k = f"{base} ({k})", k + 1
        controls[label] = _value(widget)
    return controls


def shown_error(root: W.Widget) -> str | None:
    """The text of the error message the app shows (its last action failed or was refused), or None."""
    for widget in walk(root):
        if isinstance(widget, W.HTML) and _ERROR_MARK in (widget.value or ""):
            block = widget.value.split(_ERROR_MARK, 1)[1].split("</div>", 1)[0]
            return html.unescape(re.sub(r"<[^>]+>", "", block)).strip()
    return None


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "tab"


class ExportBar:
    """Three buttons that export the current app's figures: PNG, SVG (one download link per figure) and an HTML
    snapshot (one offline page with the figures and the controls' values).

    Args:
        current: returns ``(title, app)`` of what to export now (``app`` None: not opened yet). The dashboard
            passes its selected tab; for one app use :meth:`for_app`.

    ``widget`` is the bar; ``status`` says what happened (``data-count`` = files offered) or why nothing was
    exported; ``links`` holds the download links; ``last`` is ``{file name: bytes}`` of the last export.
    """

    def __init__(self, current: Callable[[], tuple[str, object | None]]) -> None:
        if not callable(current):
            raise TypeError(f"current must be callable, got {type(current).__name__}")
        self._current = current
        self.last: dict[str, bytes] = {}
        self.png = W.Button(description="PNG", icon="download", tooltip="each figure of this tab as a PNG image")
        self.svg = W.Button(description="SVG", icon="download", tooltip="each figure of this tab as an SVG image")
        self.snapshot = W.Button(description="HTML snapshot", icon="download",
                                 tooltip="one HTML page with this tab's figures and settings; opens offline")
        self.status = W.HTML()
        self.links = W.HTML()
        for widget, css in ((self.png, "export-png"), (self.svg, "export-svg"), (self.snapshot, "export-html"),
                            (self.status, "export-status"), (self.links, "export-links")):
            widget.add_class(css)
        for button in (self.png, self.svg, self.snapshot):
            button.layout.width = "auto"

        def on(action):
            return callback(action, self.status, "export-error", what="export", clear=False)

        self.png.on_click(on(lambda: self.export("png")))
        self.svg.on_click(on(lambda: self.export("svg")))
        self.snapshot.on_click(on(lambda: self.export("html")))
        self.widget = W.VBox([
            W.HBox([W.HTML("<b>Export this tab</b>&nbsp;"), self.png, self.svg, self.snapshot, self.status],
                   layout=W.Layout(flex_flow="row wrap", align_items="center", grid_gap="6px")),
            self.links])
        self.widget.add_class("explorer-export")
        harden(self.widget, self.status, "export-error")

    @classmethod
    def for_app(cls, app: object, title: str) -> ExportBar:
        """A bar for one app (e.g. in a notebook)."""
        return cls(lambda: (title, app))

    def clear(self) -> None:
        """Forget the last export (its links and status)."""
        self.links.value = self.status.value = ""
        self.last = {}

    def _refuse(self, text: str) -> None:
        self.links.value = ""
        self.last = {}
        self.status.value = f"<span class='export-nothing' style='color:#9a6700'>{html.escape(text)}</span>"

    def export(self, fmt: str) -> dict[str, bytes]:
        """Export the current app in ``fmt`` (``"png"``, ``"svg"`` or ``"html"``); show links; return the files."""
        if fmt not in ("png", "svg", "html"):
            raise ValueError(f"fmt must be 'png', 'svg' or 'html', got {fmt!r}")
        title, app = self._current()
        widget = getattr(app, "widget", None)
        if app is None or not isinstance(widget, W.Widget):
            self._refuse(NOT_OPENED)
            return {}
        error = shown_error(widget)
        if error is not None:
            self._refuse(f"Nothing to export: this tab's last action did not complete ({error}). "
                         "Change a setting so that it draws, then export.")
            return {}
        figures = tab_figures(widget)
        if not figures:
            self._refuse(STILL_DRAWING if find_views(widget) else NO_FIGURES)
            return {}
        self.status.value = "exporting …"
        self.links.value = ""
        slug = _slug(title)
        if fmt == "html":
            page = snapshot_html(figures, find_controls(widget), title=f"{title} — snapshot")
            files = {f"{slug}-snapshot.html": page.encode("utf-8")}
        else:
            files = {f"{slug}-{name}": data for name, data in render_figures(figures, (fmt,)).items()}
        self.last = files
        self.links.value = " ".join(download_link(data, name) for name, data in files.items())
        what = "HTML snapshot" if fmt == "html" else f"{len(files)} {fmt.upper()} file{'s' * (len(files) > 1)}"
        self.status.value = (f"<span class='export-done' data-count='{len(files)}' data-format='{fmt}'>"
                             f"{html.escape(what)} of {html.escape(title)}: download below</span>")
        return files
