"""What every app's widgets share: one policy for callbacks (a visitor's action never raises into the kernel), and
figures that are redrawn whole rather than edited in place.

Voila exposes each callback to whoever opens the page, so each runs through :func:`guarded`: errors the library
raises on purpose for bad input (ValueError, TypeError -- the memory guard's ``RequestRefused`` is a ValueError)
are shown in the app as their message; anything else is logged with its traceback on the server and shown only
as its type name.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go

from explorer.apps._layout import figure_box, responsive

__all__ = ["guarded", "error_html", "figure_widget", "figure_slot", "redraw"]

log = logging.getLogger("explorer.apps")


def error_html(css: str, text: str) -> str:
    """The red message block every app shows (``css`` names it for tests, e.g. ``"rf-error"``)."""
    return f"<div class='{css}' style='color:#b00020'>⚠ {html.escape(text)}</div>"


def guarded(action: Callable[[], object], target: W.HTML, css: str, *, what: str = "update",
            shown: tuple[type[BaseException], ...] = (ValueError, TypeError), clear: bool = True) -> bool:
    """Run ``action()``; on success clear ``target`` (if ``clear``), on failure show the error there.

    Args:
        action: the callback's work.
        target: the HTML widget that shows messages.
        css: class of the message block.
        what: verb for unexpected failures ("could not update").
        shown: exception types whose message is shown as is (our own, deliberate messages).
        clear: empty ``target`` after a successful action.

    Returns:
        True if the action succeeded.
    """
    try:
        action()
    except shown as error:
        target.value = error_html(css, str(error))
        return False
    except Exception as error:  # a visitor's click must never surface a traceback
        log.exception("%s: callback failed", css)
        target.value = error_html(css, f"could not {what}: {type(error).__name__}")
        return False
    if clear:
        target.value = ""
    return True


def figure_widget(figure: go.Figure, css: str) -> go.FigureWidget:
    """A responsive ``FigureWidget`` of ``figure`` (width from its container) with class ``css``."""
    widget = responsive(go.FigureWidget(figure))
    widget.add_class(css)
    return widget


def figure_slot(figure: go.Figure, css: str, basis: int = 640, min_width: int = 300) -> tuple[go.FigureWidget, W.Box]:
    """:func:`figure_widget` inside a flex box (``basis`` px when there is room) that :func:`redraw` refills."""
    widget = figure_widget(figure, css)
    return widget, figure_box(widget, basis, min_width)


def redraw(slot: W.Box, figure: go.Figure, css: str) -> go.FigureWidget:
    """Replace the figure in ``slot`` by a new ``FigureWidget`` of ``figure``; return the new widget.

    Plotly sends an in-place edit of a ``FigureWidget`` as a trait that is set and at once reset to None, and the
    browser was seen to miss such edits (the page kept the old data while the kernel held the new: the cost and
    cross-modal tabs' browser tests caught it). A new widget carries its data in its initial state instead.
    """
    widget = figure_widget(figure, css)
    old = slot.children
    slot.children = (widget,)
    for child in old:
        child.close()
    return widget

