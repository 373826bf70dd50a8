"""What every app's widgets share: one policy for callbacks (a visitor's action never raises into the kernel).

Voila exposes each callback to whoever opens the page, so each runs through :func:`guarded` (or a handler made by
:func:`callback`): errors the library raises on purpose for bad input (ValueError, TypeError, RuntimeError -- the
memory guard's ``RequestRefused`` is a ValueError; the layers' and kernels' own refusals are RuntimeErrors) are
shown in the app as their message; anything else is logged with its traceback on the server and shown only as its
type name. A callback that runs a model can run it on one thread (:func:`single_thread`).

Figures follow one update policy too: each is an :class:`explorer.apps._plot.PlotView` whose ``update(figure)``
replaces the whole figure that :mod:`explorer.viz` built from the app's numbers (see that module for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Callable, Iterator

import ipywidgets as W
import torch

__all__ = ["guarded", "callback", "error_html", "quietly", "single_thread", "soon", "SHOWN"]

log = logging.getLogger("explorer.apps")

SHOWN: tuple[type[BaseException], ...] = (ValueError, TypeError, RuntimeError)  # our own, deliberate messages


def error_html(css: str, text: str) -> str:
    """The red message block every app shows (``css`` names it for tests, e.g. ``"rf-error"``)."""
    return f"<div class='{css}' style='color:#b00020'>⚠ {html.escape(text)}</div>"


def guarded(action: Callable[[], object], target: W.HTML, css: str, *, what: str = "update",
            clear: bool = True) -> bool:
    """Run ``action()``; on success clear ``target`` (if ``clear``), on failure show the error there.

    Args:
        action: the callback's work.
        target: the HTML widget that shows messages.
        css: class of the message block.
        what: verb for unexpected failures ("could not update").
        clear: empty ``target`` after a successful action.

    Returns:
        True if the action succeeded.
    """
    try:
        action()
    except SHOWN as error:
        target.value = error_html(css, str(error))
        return False
    except Exception as error:  # a visitor's click must never surface a traceback
        log.exception("%s: callback failed", css)
        target.value = error_html(css, f"could not {what}: {type(error).__name__}")
        return False
    if clear:
        target.value = ""
    return True


def callback(action: Callable[[], object], target: W.HTML, css: str, *, what: str = "update",
             clear: bool = True) -> Callable[..., None]:
    """A handler for ``observe`` / ``on_click`` (any arguments, ignored) that runs ``action`` through
    :func:`guarded`."""
    def handler(*_args, **_kwargs) -> None:
        guarded(action, target, css, what=what, clear=clear)

    return handler


def soon(action: Callable[[], object], target: W.HTML, css: str, *, what: str = "update",
         delay: float = 0.05, run_now: bool = True) -> bool:
    """Run ``action`` through :func:`guarded` right after the current cell or widget message, so that what was
    built before it reaches the page first (an app's first figure before the rest of its figures).

    It is scheduled on the running event loop: the kernel's, in JupyterLab and Voila alike (cells and comm messages
    are handled on it). Where no loop runs (tests, plain Python), ``action`` runs at once, so results stay
    deterministic, and errors raise as they would from the constructor; with ``run_now=False`` (work that only
    prepares what may be asked next) it is then skipped. Returns True if it was scheduled.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if run_now:
            action()
        return False
    loop.call_later(delay, lambda: guarded(action, target, css, what=what, clear=False))
    return True


@contextlib.contextmanager
def quietly(app: object) -> Iterator[None]:
    """Set ``app._busy`` while the block assigns controls, so observers that check it do not run the model again."""
    app._busy = True
    try:
        yield
    finally:
        app._busy = False


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, restoring the thread count afterwards.

    A visitor's kernel shares the server's cores with the other kernels and the web server; torch's OpenMP threads
    spin-wait for each other, so on 2 busy cores two threads are far slower than one (measured for the Intervene
    tab, another process busy: a toggle took 1.65 s with 2 threads, 0.125 s with 1).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
