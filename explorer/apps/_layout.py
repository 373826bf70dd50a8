"""Layouts that fit their container: JupyterLab's main area is narrower than Voila's page, and both change width.

- :func:`row`: a flex row that wraps, so controls and figures move to the next line instead of overflowing.
- :func:`figure_box`: a flex item for one figure with a preferred and a minimum width; the figure inside takes the
  box's width (builders set heights only).
- :class:`WidthWatcher`: JupyterLab and Voila change a container's width without a window resize (a side panel
  opens, a dashboard tab is shown for the first time, having been laid out at zero width while hidden); this
  invisible widget watches its parent element and, when its width changes, dispatches the window ``resize`` event
  that bokeh's own layout listens to. (Plotly figures, :class:`explorer.apps._plot.PlotView`, watch their own
  element.)
"""

from __future__ import annotations

import anywidget
import ipywidgets as W

__all__ = ["row", "figure_box", "WidthWatcher", "GAP"]

GAP = "4px 12px"  # row gap, column gap between flex items


def row(children, align: str = "flex-start") -> W.HBox:
    """A horizontal box whose children wrap onto the next line when they do not fit."""
    return W.HBox(list(children), layout=W.Layout(flex_flow="row wrap", align_items=align, grid_gap=GAP,
                                                   width="100%", max_width="100%"))


def figure_box(child: W.Widget, basis: int, min_width: int = 300, max_width: int | None = None) -> W.Box:
    """A flex item holding ``child`` (a figure), ``basis`` px wide when there is room, never below ``min_width``
    (nor above ``max_width``, when given). Put it in a :func:`row`: in a column the basis would be its height."""
    # a column that stretches its child across: the figure's element is as wide as the box, and plotly's autosize
    # measures that element
    return W.Box([child], layout=W.Layout(flex=f"1 1 {basis}px", min_width=f"{min_width}px",
                                          max_width="100%" if max_width is None else f"min(100%, {max_width}px)",
                                          flex_flow="column", align_items="stretch", overflow="hidden"))


_WATCHER_ESM = r"""
function render({el}) {
  el.classList.add("explorer-width-watcher");
  el.style.display = "block";
  el.style.width = "100%";
  el.style.height = "0";
  let last = null, timer = null;
  const observer = new ResizeObserver((entries) => {
    const width = Math.round(entries[0].contentRect.width);
    if (width === last) return;
    last = width;
    clearTimeout(timer);
    timer = setTimeout(() => window.dispatchEvent(new Event("resize")), 60);
  });
  const attach = () => (el.parentElement ? observer.observe(el.parentElement) : setTimeout(attach, 100));
  attach();
  return () => { clearTimeout(timer); observer.disconnect(); };
}
export default {render};
"""


class WidthWatcher(anywidget.AnyWidget):
    """Invisible: place it in an app's root box; width changes of that box re-fit the app's figures."""

    _esm = _WATCHER_ESM
