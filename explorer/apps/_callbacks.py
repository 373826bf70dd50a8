"""One policy for every widget callback: a visitor's action never raises into the kernel.

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

__all__ = ["guarded", "error_html"]

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
