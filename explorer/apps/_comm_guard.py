"""Hostile visitors: what a page may send through a widget's comm, and what happens to everything else.

A Voila page holds a comm to every widget of the app, and a modified page can send any state for any synced trait,
or any custom message. What stock ipywidgets 8.1 does with that (measured; see tests/apps/test_hostile_visitors.py):

* Every ``update`` is echoed back (``echo_update``) *before* it is validated, and then applied with ``set_trait``.
  A value the trait refuses (``"abc"`` for an ``IntSlider``, ``index=99`` for a ``Dropdown``, ``(5, 2)`` for a range)
  raises ``TraitError`` inside ``_handle_msg``, whose decorator catches it and calls ``showtraceback()`` (in a kernel
  the traceback, server paths included, goes out on iopub; outside one it is logged). Nothing tells the page: its
  control keeps the bad value. Errors that are not ``TraitError`` (an observer's ``IndexError``) are not rolled back.
* Out-of-range numbers are clamped silently (the clamped value is sent back, no message); ``5.7`` on an int slider
  becomes ``5`` and the page keeps showing ``5.7``.
* Nothing stops a page from setting traits no view ever sets: ``{"max": 10**9, "value": 10**9}`` gives a conv stack
  of a billion layers; ``_options_labels`` desynchronises a dropdown's index from its value; a display widget's
  ``value``; ``index=None`` empties a dropdown; a 10 MB string is accepted. The kernel's JSON parser accepts
  ``NaN`` / ``Infinity`` (a browser never sends them; a modified page can).
* A malformed custom message (``content`` not an object) raises in ``Button``'s handler; exceptions of ``on_msg``
  and ``on_click`` handlers are caught by ipywidgets and shown as tracebacks. Every click of a click storm runs.

:func:`harden` puts a guard on every widget of an app (its root box, all descendants, their layouts and styles, and
children added later): an update is applied only if every key is one the stock views set from the page
(:data:`FRONTEND_KEYS`) and its value has the kind the trait holds, is finite and not oversized; a refused update is
not applied, the page's control is reset to the kernel's value and the app's message names the widget and the key.
Numbers ipywidgets clamps are accepted, reported and re-sent. Custom messages must be objects; their handlers' errors
are shown through :func:`explorer.apps._callbacks.guarded`, and a widget handles at most one custom message per
:data:`MESSAGE_INTERVAL_S` (a click storm runs its action once). Malformed comm envelopes never reach ipywidgets.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import ipywidgets as W
from traitlets import TraitError

from explorer.apps._callbacks import error_html, guarded

__all__ = ["harden", "guard_of", "FRONTEND_KEYS", "MAX_TEXT", "MAX_ITEMS", "MESSAGE_INTERVAL_S"]

log = logging.getLogger("explorer.apps")

# The keys the stock ipywidgets views set from the page (@jupyter-widgets/controls 8: value, index, selected_index,
# playing/repeat of Play, outputs/msg_id of Output, _view_count when views are counted). A widget class whose own
# view sends more declares them in a ``_frontend_keys`` tuple.
FRONTEND_KEYS = frozenset({"value", "index", "selected_index", "playing", "repeat", "outputs", "msg_id",
                           "_view_count"})
# Widgets that only show their value: their views never send it.
_DISPLAY_ONLY = (W.HTML, W.HTMLMath, W.Label, W.IntProgress, W.FloatProgress, W.Valid, W.Image, W.Audio, W.Video)
MAX_TEXT = 10_000          # characters in one string of an update (a pasted article is ~5,000 per page)
MAX_ITEMS = 100_000        # list items and dict entries in one update, all levels together
_MAX_DEPTH = 32            # nesting levels of one update
MESSAGE_INTERVAL_S = 0.2   # a custom message arriving sooner after the end of the previous one is dropped
_METHODS = ("update", "request_state", "custom")
_ATTR = "_explorer_comm_guard"


@dataclass
class _Guard:
    """Where one widget reports (the app's message widget and class) and when it last handled a custom message."""
    message: W.HTML
    css: str
    last_custom: float = -math.inf


def harden(root: W.Widget, message: W.HTML, css: str) -> int:
    """Guard every widget under ``root`` against what a modified page could send (see the module docstring).

    Args:
        root: the app's top widget; its descendants (children, layouts, styles, any widget a synced trait holds)
            are guarded too, and so are children added to a box later.
        message: the HTML widget where refusals are shown.
        css: class of the message block (``error_html``).

    Returns:
        How many widgets were newly guarded. Idempotent: a widget keeps the first guard it got (so an app that
        hardens itself keeps its own message when the dashboard hardens the tab around it).
    """
    if not isinstance(root, W.Widget):
        raise TypeError(f"root must be an ipywidgets Widget, got {type(root).__name__}")
    if not isinstance(message, W.HTML):
        raise TypeError(f"message must be an ipywidgets HTML widget, got {type(message).__name__}")
    count = 0
    for widget in _walk(root):
        if guard_of(widget) is None:
            _install(widget, _Guard(message, css))
            count += 1
    return count


def guard_of(widget: W.Widget) -> tuple[W.HTML, str] | None:
    """``(message, css)`` where ``widget`` reports refusals, or None when it is not guarded."""
    guard = getattr(widget, _ATTR, None)
    return None if guard is None else (guard.message, guard.css)


def _walk(root: W.Widget) -> Iterator[W.Widget]:
    """``root`` and every widget reachable through its synced traits (children, layout, style, ...), once each."""
    seen, stack = set(), [root]
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        yield widget
        for key in widget.keys:
            value = getattr(widget, key, None)
            items = value if isinstance(value, (tuple, list)) else (value,)
            stack.extend(item for item in items if isinstance(item, W.Widget))


def _install(widget: W.Widget, guard: _Guard) -> None:
    """Put the guard in front of the widget's update, custom-message and comm entry points."""
    setattr(widget, _ATTR, guard)
    apply = widget.set_state  # ipywidgets' _handle_msg looks both methods up on the instance
    widget.set_state = lambda state: _set_state(widget, guard, apply, state)
    widget._handle_custom_msg = lambda content, buffers: _custom(widget, guard, content, buffers)
    if widget.comm is not None:  # the kernel's comm calls this first: malformed envelopes stop here
        widget.comm.on_msg(lambda msg: _receive(widget, guard, msg))
    if isinstance(widget, W.Box):
        widget.observe(lambda change: harden(change["owner"], guard.message, guard.css), names="children")


# --- updates ------------------------------------------------------------------------------------------------
def _set_state(widget: W.Widget, guard: _Guard, apply: Callable[[dict], None], state: object) -> None:
    """Apply ``state`` from the page with ``apply`` (ipywidgets' set_state) only if every key may take its value."""
    if not isinstance(state, dict):
        _show(guard, f"{_name(widget)}: refused an update that is not a set of keys")
        return
    keys = [key for key in state if key in widget.keys]  # ipywidgets ignores the others
    resend = [key for key in keys if _settable(widget, key)]  # never re-send what no view may change
    for key in keys:
        reason = _problem(widget, key, state[key])
        if reason:
            _show(guard, f"{_name(widget)}: refused {key!r} from the page ({reason})")
            if resend:
                widget.send_state(resend)
            return
    before = {key: getattr(widget, key) for key in keys}
    shown = guard.message.value
    try:
        apply(state)
    except Exception as error:
        _restore(widget, before)  # traitlets rolls back TraitErrors only
        if isinstance(error, (TraitError, ValueError, TypeError)):
            reason = str(error)
        else:
            log.exception("%s: update of %s failed", guard.css, _name(widget))
            reason = type(error).__name__
        _show(guard, f"{_name(widget)}: refused {', '.join(map(repr, keys))} from the page ({reason})")
        widget.send_state(resend)
        return
    # numbers ipywidgets clamped (or an int trait truncated): accepted, but said so and shown as kept
    adjusted = [key for key in keys if key == "value" and _numeric(getattr(widget, key))
                and _json(widget, key) != state[key]]
    if adjusted:
        notes = [f"{_name(widget)}: {state[key]!r} was clamped to {_json(widget, key)!r}{_bounds(widget)}"
                 for key in adjusted]
        app_note = guard.message.value if guard.message.value != shown else ""  # what the app said just now
        _show(guard, "; ".join(notes), after=app_note)
        widget.send_state(adjusted)  # the page shows the value the kernel kept


def _settable(widget: W.Widget, key: str) -> bool:
    """Whether the widget's own view sets ``key`` from the page."""
    if key == "value" and isinstance(widget, _DISPLAY_ONLY):
        return False
    return key in FRONTEND_KEYS or key in getattr(widget, "_frontend_keys", ())


def _problem(widget: W.Widget, key: str, value: object) -> str | None:
    """Why ``value`` for ``key`` is refused before ipywidgets sees it, or None."""
    if not _settable(widget, key):
        return "the page may not change it"
    size = _size_problem(value)
    if size:
        return size
    want, got = _kind(_json(widget, key)), _kind(value)
    if key in ("index", "selected_index"):  # an option number, a list of distinct ones, or None
        options = value if isinstance(value, list) else [value]
        if not all(i is None or (isinstance(i, int) and not isinstance(i, bool)) for i in options):
            return f"an option number is expected, got {_short(value)}"
        if isinstance(value, list) and len(set(value)) < len(value):
            return "it repeats an option"
        # no view empties a choice that has options (but an Accordion's page closes every pane with None)
        if value is None and want is not None and not (key == "selected_index" and isinstance(widget, W.Accordion)):
            return "one of the options must stay chosen"
    if want is not None and got != want and not (value is None and key == "selected_index"):
        return f"expected {want}, got {got or 'null'}"
    if want is None and got == "true/false":  # an unset trait: its validator decides, but a bool is no number
        return "true/false is not accepted here"
    return None


def _kind(value: object) -> str | None:
    """The JSON kind of a value: what the page must send for a trait that holds ``value``."""
    if value is None:
        return None
    for kind, types in (("true/false", bool), ("a number", (int, float)), ("text", str), ("a list", (list, tuple)),
                        ("an object", dict)):
        if isinstance(value, types):
            return kind
    return type(value).__name__


def _size_problem(value: object) -> str | None:
    """Oversized, too deep or non-finite content, checked without recursion limits."""
    budget, stack = MAX_ITEMS, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{item} is not a finite number"
        if isinstance(item, str) and len(item) > MAX_TEXT:
            return f"{len(item):,} characters, more than {MAX_TEXT:,}"
        if isinstance(item, (list, dict)):
            if depth >= _MAX_DEPTH:
                return f"nested more than {_MAX_DEPTH} levels"
            budget -= len(item)
            if budget < 0:
                return f"more than {MAX_ITEMS:,} items"
            children = list(item.keys()) + list(item.values()) if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def _restore(widget: W.Widget, before: dict) -> None:
    for key, value in before.items():
        try:
            if getattr(widget, key) is not value:
                widget.set_trait(key, value)
        except Exception:  # an observer failing again: the value is back, the app's own message says why
            log.exception("could not restore %s.%s", type(widget).__name__, key)


def _numeric(value: object) -> bool:
    """A number or a tuple of numbers (sliders, ranges, bounded texts): the values ipywidgets clamps."""
    items = value if isinstance(value, tuple) else (value,)
    return bool(items) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)


def _json(widget: W.Widget, key: str) -> object:
    """The kernel's value of ``key`` as the page receives it (the trait's serializer; tuples are lists)."""
    to_json = widget.trait_metadata(key, "to_json", widget._trait_to_json)
    value = to_json(getattr(widget, key), widget)
    return list(value) if isinstance(value, tuple) else value


def _bounds(widget: W.Widget) -> str:
    low, high = getattr(widget, "min", None), getattr(widget, "max", None)
    return f" (allowed {low} to {high})" if low is not None and high is not None else ""


# --- custom messages and envelopes ------------------------------------------------------------------------------
def _custom(widget: W.Widget, guard: _Guard, content: object, buffers: list) -> None:
    """Run the widget's ``on_msg`` handlers (and a button's click handlers) one by one, each through ``guarded``."""
    if not isinstance(content, dict):
        _show(guard, f"{_name(widget)}: ignored a malformed message from the page")
        return
    if time.monotonic() - guard.last_custom < MESSAGE_INTERVAL_S:  # a storm queued while the last one ran
        log.info("%s: dropped a custom message to %s (%.1f s rule)", guard.css, _name(widget), MESSAGE_INTERVAL_S)
        return
    try:
        for handler in list(widget._msg_callbacks.callbacks):
            if isinstance(widget, W.Button) and handler == widget._handle_button_msg:
                if content.get("event") == "click":  # what Button._handle_button_msg does, minus its own catch-all
                    for on_click in list(widget._click_handlers.callbacks):
                        _run(guard, widget, lambda on_click=on_click: on_click(widget))
            else:
                _run(guard, widget, lambda handler=handler: handler(widget, content, buffers))
    finally:
        guard.last_custom = time.monotonic()


def _run(guard: _Guard, widget: W.Widget, action: Callable[[], object]) -> None:
    guarded(action, guard.message, guard.css, what=f"handle {_name(widget)}", clear=False)


def _receive(widget: W.Widget, guard: _Guard, msg: object) -> None:
    """The comm's entry point: refuse envelopes ipywidgets would fail on (with a traceback), pass the rest on."""
    content = msg.get("content") if isinstance(msg, dict) else None
    data = content.get("data") if isinstance(content, dict) else None
    if not isinstance(data, dict) or data.get("method") not in _METHODS or not isinstance(msg.get("buffers"), list):
        _show(guard, f"{_name(widget)}: ignored a malformed message from the page")
        return
    if data["method"] == "update":
        state, paths = data.get("state", {}), data.get("buffer_paths", [])
        if not (isinstance(state, dict) and isinstance(paths, list) and all(_resolves(state, p) for p in paths)):
            _show(guard, f"{_name(widget)}: ignored a malformed update from the page")
            return
    widget._handle_msg(msg)


def _resolves(state: object, path: object) -> bool:
    """Whether ``state[path[0]]...[path[-1]] = buffer`` can be done (what ipywidgets' ``_put_buffers`` does)."""
    if not isinstance(state, dict) or not isinstance(path, list) or not path:
        return False
    node = state
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, dict) and isinstance(key, str) and (last or key in node):
            node = node.get(key)
        elif (isinstance(node, list) and isinstance(key, int) and not isinstance(key, bool)
              and -len(node) <= key < len(node)):
            node = node[key]
        else:
            return False
    return True


# --- messages -------------------------------------------------------------------------------------------------
def _name(widget: W.Widget) -> str:
    description = getattr(widget, "description", "")
    name = description if isinstance(description, str) and description.strip() else type(widget).__name__
    return name if len(name) <= 40 else name[:39] + "…"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _show(guard: _Guard, text: str, after: str = "") -> None:
    """Show ``text`` (shortened: it may quote what the page sent) in the app's message, before ``after``."""
    text = text if len(text) <= 300 else text[:299] + "…"
    guard.message.value = error_html(guard.css, text) + after
