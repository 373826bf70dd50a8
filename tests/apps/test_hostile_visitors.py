"""Hostile visitors: every widget of every dashboard tab gets, through its comm, what a modified page could send.

A Voila page holds a comm to every widget, and a modified page can send any state for any synced trait and any
custom message. Each message here takes the path ipykernel takes for a ``comm_msg`` (``comm.handle_msg(msg)``, which
calls what the widget registered: ipywidgets' ``_handle_msg`` or the guard in front of it). Every tab's app is built
by the dashboard, as in Voila, and hardened with :func:`explorer.apps._comm_guard.harden` here (harden is idempotent,
so this stays right once the apps harden themselves). The widgets are enumerated from what each app constructed
(ipywidgets' construction hook), not from a hand list and not from harden's own walk: a widget added to an app is
covered, and one that harden cannot reach fails the first test.

For each case: nothing reaches ipywidgets' catch-all (which would log, or in a kernel publish, a traceback), the
widget's value afterwards is valid (within its bounds, an index within its options, text within the limit), the
app's message block shows a refusal or a clamp naming the widget, the page is sent the kernel's value, and afterwards
the app still answers a legitimate change.
"""

from __future__ import annotations

import html
import logging
import math
import time
from dataclasses import dataclass, field

import ipywidgets as W
import pytest
import torch

from explorer.apps import _comm_guard
from explorer.apps._comm_guard import FRONTEND_KEYS, MAX_TEXT, guard_of, harden
from explorer.apps.dashboard import TABS, dashboard

# Where each app shows its messages: (attribute, css). A new tab's app must be added here (the build fails otherwise).
MESSAGES = {
    "ReceptiveFieldApp": ("message", "rf-error"),
    "AttentionMapsApp": ("message", "attn-error"),
    "CrossModalApp": ("message", "xm-error"),
    "CostScalingApp": ("status", "cost-error"),
    "HeadToHeadApp": ("message", "h2h-error"),
    "LongRangeApp": ("message", "lr-error"),
    "InterveneApp": ("message", "iv-error"),
    "SpeechApp": ("status", "sp-error"),
}
# What ipywidgets' own catch-alls log when an exception reaches them (``_show_traceback``, ``CallbackDispatcher``).
CATCH_ALL = ("Exception in widget method", "Exception in callback")
# Display-only widgets: the page never sets their value (see _comm_guard._DISPLAY_ONLY).
DISPLAY_ONLY = (W.HTML, W.HTMLMath, W.Label, W.IntProgress, W.FloatProgress, W.Audio)
STORM = 20  # clicks sent at once


@dataclass
class Built:
    """One tab's app with where it reports and every widget it constructed."""
    title: str
    app: object
    message: W.HTML
    css: str
    created: list = field(default_factory=list)

    @property
    def widgets(self) -> list[W.Widget]:
        return [w for w in self.created if w.comm is not None]  # closed widgets have no comm to send to


@pytest.fixture(scope="module")
def dash():
    """The dashboard with every tab opened (through the comm, as a visitor opens them), apps hardened."""
    created: list[W.Widget] = []
    built: dict[int, Built] = {}

    def hardened(index: int, title: str, factory):
        def build():
            start = len(created)
            app = factory()
            name = type(app).__name__
            assert name in MESSAGES, f"add {name}'s message widget and css to MESSAGES"
            attribute, css = MESSAGES[name]
            harden(app.widget, getattr(app, attribute), css)
            message, css = guard_of(app.widget)  # the app's own guard, if it hardens itself
            built[index] = Built(title, app, message, css, created[start:])
            return app
        return build

    previous = W.Widget._widget_construction_callback
    W.Widget.on_widget_constructed(created.append)
    try:
        tab = dashboard([(title, hardened(i, title, factory)) for i, (title, factory) in enumerate(TABS)])
        harden(tab, W.HTML(), "dash-error")  # the dashboard hardened its tab bar itself: its own notice wins
        tab_message, css = guard_of(tab)
        assert css == "dash-error" and tab_message is tab.notice
        for i in range(1, len(TABS)):
            update(tab, {"selected_index": i})
        update(tab, {"selected_index": 0})
    finally:
        W.Widget.on_widget_constructed(previous)
    failed = {tab.get_title(i): tab.children[i].children[0].value for i in range(len(TABS)) if i not in built}
    assert not failed, f"tabs that did not build: {failed}"
    return tab, tab_message, built


@pytest.fixture
def sent(monkeypatch):
    """Every message the kernel sends to a page, as (widget, msg)."""
    messages: list[tuple[W.Widget, dict]] = []
    monkeypatch.setattr(W.Widget, "_send", lambda self, msg, buffers=None: messages.append((self, msg)))
    return messages


@pytest.fixture
def no_catch_all(caplog):
    """Fails the test if an exception reached ipywidgets' catch-alls, or an unexpected one was logged by our code."""
    caplog.set_level(logging.WARNING)
    yield
    leaked = [r.getMessage()[:200] for r in caplog.records
              if r.getMessage().startswith(CATCH_ALL) or (r.name == "explorer.apps" and r.levelno >= logging.ERROR)]
    assert not leaked, leaked


# --- the comm path ----------------------------------------------------------------------------------------------
def deliver(widget: W.Widget, data: object, buffers: list | None = None) -> None:
    """What ipykernel's CommManager.comm_msg does with a message from the page."""
    widget.comm.handle_msg({"header": {"msg_type": "comm_msg"},
                            "content": {"comm_id": widget.comm.comm_id, "data": data},
                            "buffers": [] if buffers is None else buffers})


def update(widget: W.Widget, state: dict) -> None:
    deliver(widget, {"method": "update", "state": state, "buffer_paths": []})


def custom(widget: W.Widget, content: object) -> None:
    deliver(widget, {"method": "custom", "content": content})


def kernel_json(widget: W.Widget, key: str) -> object:
    value = widget.get_state(key)[key]
    return list(value) if isinstance(value, tuple) else value


def last_update(sent, widget: W.Widget, key: str) -> object:
    """The last ``update`` of ``key`` the kernel sent to ``widget``'s page (not ipywidgets' echo of the request)."""
    for owner, msg in reversed(sent):
        if owner is widget and msg.get("method") == "update" and key in msg.get("state", {}):
            value = msg["state"][key]
            return list(value) if isinstance(value, tuple) else value
    return "<nothing sent>"


def named(widget: W.Widget) -> str:
    description = getattr(widget, "description", "")
    return html.escape((description if description.strip() else type(widget).__name__)[:39])


# --- what a modified page sends -----------------------------------------------------------------------------------
def hostile_cases(widget: W.Widget, key: str) -> list[tuple[str, object, str]]:
    """(label, value, "refused" | "clamped") for ``widget``'s ``key``, from the kind of value it holds."""
    current = getattr(widget, key)
    display_only = isinstance(widget, DISPLAY_ONLY)
    # JSON as a page can write it: the kernel's parser also takes NaN and Infinity (json.loads), so they are sent
    cases = [("null", None), ("text", "abc"), ("list", [1, [2]]), ("nested object", {"a": {"b": [1]}}),
             ("true", True), ("NaN", math.nan), ("Infinity", math.inf), ("-Infinity", -math.inf),
             ("20,000 characters", "x" * 20_000)]
    # drop what is a legitimate value of this trait (unless no view may send it at all)
    cases = [(label, value, "refused") for label, value in cases
             if display_only or not (value is None and current is None)
             and not (isinstance(value, str) and isinstance(current, str) and len(value) <= MAX_TEXT)
             and not (isinstance(value, bool) and isinstance(current, bool))]
    bounded = hasattr(widget, "min") and hasattr(widget, "max")
    if display_only:
        cases.append(("a value of its own kind", 1 if isinstance(current, (int, float)) else "<b>hi</b>", "refused"))
    elif key == "index" and isinstance(current, tuple):  # multiple selection
        n = len(widget.options)
        cases += [("out of range", [99], "refused"), ("negative", [-1], "refused"),
                  ("one past the end", [n], "refused"), ("repeated", [0, 0], "refused"),
                  ("a number, not a list", 0, "refused"), ("true in a list", [True], "refused")]
    elif key == "index":
        n = len(widget.options)
        cases += [("out of range", 99, "refused"), ("negative", -1, "refused"), ("one past the end", n, "refused"),
                  ("a fraction", 0.5, "refused"), ("a list", [0], "refused")]
    elif isinstance(current, tuple) and bounded:  # range slider
        cases += [("reversed", [widget.max, widget.min], "refused"), ("one number", [widget.min], "refused"),
                  ("texts", ["a", "b"], "refused"), ("null inside", [None, widget.max], "refused"),
                  ("wider than its bounds", [widget.min - 1000, widget.max + 1000], "clamped"),
                  ("huge", [10**9, 10**9], "clamped")]
    elif isinstance(current, (int, float)) and not isinstance(current, bool) and bounded:
        if isinstance(current, int):
            cases.append(("a fraction", current + 0.5, "clamped"))  # an int trait truncates: said, and re-sent
        cases += [("huge", 10**9, "clamped"), ("beyond 64 bits", 10**30, "clamped"),
                  ("huge negative", -10**9, "clamped"),
                  ("raise max, then value", {"max": 10**9, "value": 10**9}, "refused"),
                  ("lower min, then value", {"min": -10**9, "value": -10**9}, "refused")]
    return cases


def assert_valid(widget: W.Widget, key: str, bounds: tuple | None) -> None:
    """The kernel's value is one the app can use: within the bounds it had, an index of its options, short text."""
    value = getattr(widget, key)
    if key == "index":
        items = value if isinstance(value, tuple) else (value,)
        assert all(i is None or (type(i) is int and 0 <= i < len(widget.options)) for i in items), value
        assert len(set(items)) == len(items), value
    elif bounds is not None:
        items = value if isinstance(value, tuple) else (value,)
        assert all(type(v) in (int, float) and bounds[0] <= v <= bounds[1] for v in items), (value, bounds)
        assert (widget.min, widget.max) == bounds  # the page cannot move the bounds either
    elif isinstance(value, str):
        assert len(value) <= MAX_TEXT


BUILT_TITLES = [title for title, _ in TABS]
# A visitor's cheaper settings before the click storm (the storm runs each button's action once, for real)
CHEAP = {"Cost scaling": lambda app: (update(app.ops, {"index": [0]}), update(app.sizes, {"value": [5, 6]})),
         "Intervene": lambda app: (update(app.sentence_a, {"value": "A cat slept."}),
                                   update(app.sentence_b, {"value": "The cat woke."}))}


def tab_param():
    return pytest.mark.parametrize("index", range(len(TABS)), ids=BUILT_TITLES)


# --- the tests ------------------------------------------------------------------------------------------------------
@tab_param()
def test_every_widget_the_app_made_is_guarded_once(dash, index):
    _tab, _m, built = dash
    b = built[index]
    unguarded = [type(w).__name__ for w in b.widgets if guard_of(w) is None]
    assert not unguarded, f"widgets harden could not reach (not in the app's tree?): {unguarded}"
    assert all(guard_of(w)[0] is b.message for w in b.widgets)  # they all report where the app does
    assert len(b.widgets) >= 40  # a real app tree (controls, their layouts and styles), not a vacuous pass
    wrapped = {id(w): (w.set_state, w._handle_custom_msg) for w in b.widgets}
    assert harden(b.app.widget, b.message, b.css) == 0  # idempotent: nothing wrapped twice
    assert all((w.set_state, w._handle_custom_msg) == wrapped[id(w)] for w in b.widgets)


@tab_param()
def test_hostile_values_are_refused_or_clamped_with_a_message(dash, index, sent, no_catch_all):
    _tab, _m, built = dash
    b = built[index]
    exercised = []  # (widget, key, number of cases)
    for widget in b.widgets:
        for key in ("value", "index"):
            if key not in widget.keys:
                continue
            original = getattr(widget, key)
            bounds = (widget.min, widget.max) if hasattr(widget, "min") and hasattr(widget, "max") else None
            cases = hostile_cases(widget, key)
            for label, value, expect in cases:
                before = getattr(widget, key)
                b.message.value = ""
                sent.clear()
                update(widget, value if label.endswith("then value") else {key: value})
                where = f"{b.title}: {type(widget).__name__} {named(widget)!r} {key} <- {label}"
                assert b.css in b.message.value and named(widget) in b.message.value, where
                assert_valid(widget, key, bounds)
                assert before is None or type(getattr(widget, key)) is type(before), where  # the kind it had
                if expect == "refused":
                    if widget is not b.message:  # the message widget now holds the refusal itself
                        assert getattr(widget, key) == before, where
                        if not isinstance(widget, DISPLAY_ONLY):  # the page's control is reset to the kernel's
                            assert last_update(sent, widget, key) == kernel_json(widget, key), where
                else:
                    assert "clamped" in b.message.value, where
                    assert last_update(sent, widget, key) == kernel_json(widget, key), where
            if getattr(widget, key) != original and widget is not b.message:  # put it back, as a visitor would
                update(widget, {key: list(original) if isinstance(original, tuple) else original})
                assert getattr(widget, key) == original
            exercised.append((widget, key, len(cases)))
    controls = [w for w, _key, _n in exercised if not isinstance(w, DISPLAY_ONLY)]
    assert len(controls) >= 4 and len(exercised) >= 6, exercised  # the app's controls and its displays
    assert all(n >= 6 for _w, _key, n in exercised), exercised


@tab_param()
def test_keys_no_view_sets_are_refused(dash, index, sent, no_catch_all):
    """max, min, options, _options_labels, description, children, layout, _esm, spec, ...: any synced key the
    page's own views never send is refused; the kernel keeps its value and does not re-send it."""
    _tab, _m, built = dash
    b = built[index]
    count = 0
    for widget in b.widgets:
        for key in widget.keys:
            if key in FRONTEND_KEYS or key in getattr(widget, "_frontend_keys", ()):
                continue
            current = kernel_json(widget, key)
            # a value of the same kind that differs: what an attacker would send (a bigger max, other options, ...)
            if isinstance(current, bool):
                value = not current
            elif isinstance(current, (int, float)):
                value = 10**9
            elif isinstance(current, str):
                value = current + " hostile"
            elif isinstance(current, list):
                value = [] if current else ["hostile"]
            elif isinstance(current, dict):
                value = {"hostile": 1}
            else:
                value = 1
            b.message.value = ""
            sent.clear()
            update(widget, {key: value})
            assert kernel_json(widget, key) == current, (type(widget).__name__, key)
            assert b.css in b.message.value and "may not change" in b.message.value, (type(widget).__name__, key)
            assert not [m for w, m in sent if w is widget and key in m.get("state", {})], (type(widget).__name__, key)
            count += 1
    assert count >= 5 * len(b.widgets)  # every widget has a dozen or more such keys (a Layout has dozens)


@tab_param()
def test_malformed_messages_are_ignored_with_a_message(dash, index, monkeypatch, no_catch_all):
    _tab, _m, built = dash
    b = built[index]
    monkeypatch.setattr(_comm_guard, "MESSAGE_INTERVAL_S", 0.0)  # every message handled: no storm rule here
    envelopes = [None, "update", [], {}, {"method": "nope"}, {"method": ["update"]}, {"method": "update", "state": "x"},
                 {"method": "update", "state": {"value": 1}, "buffer_paths": "value"},
                 {"method": "update", "state": {"value": 1}, "buffer_paths": [["nope", "deeper"]]},
                 {"method": "update", "state": {"value": 1}, "buffer_paths": [[]]},
                 {"method": "custom", "content": "click"}, {"method": "custom", "content": None},
                 {"method": "custom", "content": [1, 2]}]
    for widget in b.widgets:
        for data in envelopes:
            b.message.value = ""
            deliver(widget, data, buffers=[b"\x00"])
            assert b.css in b.message.value and "malformed" in b.message.value, (type(widget).__name__, data)
    # objects a handler might not expect: the app's own custom-message widgets (figures, head view, buttons)
    odd = [{}, {"type": None}, {"type": ["need-plotlyjs"]}, {"type": "click"}, {"type": "click", "curve": "0"},
           {"type": "click", "curve": 10**9, "point": "x"}, {"event": None}, {"event": "click", "extra": {"a": [1]}}]
    receivers = [w for w in b.widgets if w._msg_callbacks.callbacks and not isinstance(w, W.Button)]
    for widget in receivers:
        for content in odd:
            custom(widget, content)
    assert len(receivers) >= {"Attention maps": 5, "Cross-modal": 1, "Cost scaling": 1,
                              "Head to head": 4, "Intervene": 4}.get(b.title, 0)


@tab_param()
def test_a_click_storm_runs_the_action_once(dash, index, no_catch_all):
    _tab, _m, built = dash
    b = built[index]
    buttons = [w for w in b.widgets if isinstance(w, W.Button)]
    CHEAP.get(b.title, lambda app: None)(b.app)
    for button in buttons:
        runs = []
        counter = lambda _button: runs.append(1)  # noqa: E731
        button.on_click(counter)
        try:
            time.sleep(_comm_guard.MESSAGE_INTERVAL_S)  # a fresh click, not the tail of an earlier one
            for _ in range(STORM):
                custom(button, {"event": "click"})
        finally:
            button.on_click(counter, remove=True)
        # the clicks queued while the first one ran arrive at once: one run, the rest dropped
        assert len(runs) == 1, (button.description, len(runs))
    assert len(buttons) >= {"Attention maps": 2, "Cross-modal": 2, "Cost scaling": 2,
                            "Head to head": 1, "Intervene": 2}.get(b.title, 0)


def test_the_dashboard_tab_refuses_bad_tabs_and_still_switches(dash, sent, no_catch_all):
    tab, tab_message, built = dash
    for value in (99, -1, "1", 1.5, True, [1], None, math.nan):
        tab_message.value = ""
        update(tab, {"selected_index": value})
        assert tab.selected_index == 0 and "dash-error" in tab_message.value, value
    update(tab, {"children": []})
    assert len(tab.children) == len(TABS) and "may not change" in tab_message.value
    update(tab, {"selected_index": 2})
    assert tab.selected_index == 2 and tab.apps[2] is built[2].app  # answers, and the app was not rebuilt
    update(tab, {"selected_index": 0})


# --- a legitimate change after all that (last in this file: pytest runs the tests above first) ----------------------
@tab_param()
def test_every_app_still_answers_afterwards(dash, index, no_catch_all):
    """A visitor's ordinary change, through the comm, still gives the app's result."""
    _tab, _m, built = dash
    b = built[index]
    app = b.app
    name = type(app).__name__
    if name == "ReceptiveFieldApp":
        update(app.kernel, {"value": 3})
        update(app.stride, {"value": 1})
        update(app.layers, {"value": 2})
        small = app.rf.output.size
        update(app.layers, {"value": 4})
        assert app.rf.output.size[0] > small[0] and b.css not in b.message.value  # two more convs see farther
    elif name == "AttentionMapsApp":
        update(app.layer, {"value": 2})
        assert "data-layer='2'" in app.status.value
        update(app.layer, {"value": 3})
        assert "data-layer='3'" in app.status.value and b.css not in b.message.value
    elif name == "CrossModalApp":
        n = 1 if app.n_objects.value != 1 else 2
        update(app.n_objects, {"value": n})
        assert len(app.scene.objects) == n and b.css not in b.message.value
    elif name == "CostScalingApp":
        update(app.calc_n, {"value": 1024})
        time.sleep(_comm_guard.MESSAGE_INTERVAL_S)
        custom(app.calc_button, {"event": "click"})
        assert "n = 1,024" in app.calc_result.value
    elif name == "HeadToHeadApp":
        update(app.model, {"index": 1})  # the ViT
        update(app.index, {"value": 7})
        assert app.model.value == "vit" and app.result.kind == "attention" and app.label == int(app.labels[7])
        assert b.css not in b.message.value
    elif name == "LongRangeApp":
        update(app.distance, {"value": 100})
        update(app.head, {"index": 2})  # head 2
        assert "data-distance='100'" in app.status.value and app.head.value == 1
        assert abs(float(app.attention_row.sum()) - 1) < 1e-5 and b.css not in b.message.value
    elif name == "InterveneApp":
        from explorer import intervene
        from explorer.analysis.intervention import pair_similarity, zero_ablation
        from explorer.analysis.pair_intervention import pair_forward

        update(app.cells[(4, 2)], {"value": True})  # layer 5, head 3, ablated from the page
        model = app.pretrained.model
        with torch.no_grad(), intervene(model, zero_ablation(model, {"blocks.4.attn.hook_z": [2]})):
            want = float(pair_similarity()(pair_forward(model, app.experiment.inputs))[0])
        assert abs(app.similarity - want) < 1e-6 and 'data-ablated="4.2"' in app.status.value  # same inputs: float32
        update(app.cells[(4, 2)], {"value": False})
        assert app.similarity == app.experiment.clean_similarity and b.css not in b.message.value
    elif name == "SpeechApp":
        from explorer.apps.speech import EXAMPLES

        update(app.example, {"index": 2})  # the third example sentence, chosen from the page
        assert app.utterance.text == EXAMPLES[2].text and app.example.value == 2
        update(app.view, {"index": 1})  # layer 1, head 1
        assert (app.attention.figure.data[0].z == app.alignment.patterns[0, 0]).all()
        assert b.css not in b.message.value
    else:
        raise AssertionError(f"add a legitimate change of {name} to this test")
