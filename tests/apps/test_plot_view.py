"""PlotView, the one figure widget of every app: its synced state is the figure, so no update can be lost."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from explorer.apps._plot import PlotView, plotlyjs_source, plotlyjs_version

DTYPES = {"f8": np.float64, "f4": np.float32, "u1": np.uint8, "i1": np.int8, "i2": np.int16, "u2": np.uint16,
          "i4": np.int32, "u4": np.uint32, "i8": np.int64}


def decode(value):
    """What the page's decoder does, written independently with numpy: plotly's {dtype, bdata, shape} -> array."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=DTYPES[value["dtype"]])
        shape = [int(s) for s in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.asarray(value)


def heatmap(z) -> go.Figure:
    return go.Figure(go.Heatmap(z=z)).update_layout(height=300, title="t")


def test_full_state_holds_the_last_update():
    """The lost-edit bug was a stale *initial* state: a view built later (reload, second tab, a view still loading
    when the edit came) drew the construction-time figure. Here the state a new view is built from is the latest."""
    view = PlotView(heatmap(np.zeros((2, 3), np.float32)), "x-figure")
    rng = np.random.default_rng(0)
    for _ in range(50):  # 50 rapid changes
        z = rng.random((4, 5)).astype(np.float32)
        view.update(heatmap(z))
    state = view.get_state()  # what ipywidgets sends to a page that opens (or re-opens) this widget
    sent = decode(json.loads(state["traces"])[0]["z"])
    np.testing.assert_array_equal(sent, z)  # bit-exact: float32 travels as its bytes
    assert state["revision"] == 51 and json.loads(state["frame"])["height"] == 300
    assert "x-figure" in view._dom_classes and view.figure.data[0].z.shape == (4, 5)


def test_only_the_changed_part_is_sent():
    view = PlotView(heatmap(np.ones((3, 3))))
    sent = []
    view.observe(lambda change: sent.append(change["name"]), names=["traces", "frame", "revision"])
    view.update(heatmap(np.ones((3, 3))).update_layout(title="moved"))  # layout only
    assert sent == ["frame", "revision"]
    sent.clear()
    view.update(heatmap(np.eye(3)).update_layout(title="moved"))  # data only
    assert sent == ["traces", "revision"]


def test_nested_and_integer_arrays_round_trip():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    view = PlotView(go.Figure(go.Image(z=image)))
    np.testing.assert_array_equal(decode(json.loads(view.traces)[0]["z"]), image)


def test_page_gets_the_installed_plotly_js_once_asked():
    view = PlotView(heatmap([[1]]))
    replies = []
    view.send = replies.append
    view._on_message(view, {"type": "need-plotlyjs"}, [])
    assert len(replies) == 1 and replies[0]["source"] is plotlyjs_source()
    header = re.search(r"plotly\.js v(\S+)", plotlyjs_source()[:200]).group(1)
    assert header == plotlyjs_version() == view.version


def test_clicks_reach_handlers_only_with_a_trace_index():
    view = PlotView(go.Figure([go.Heatmap(z=[[1]]), go.Heatmap(z=[[2]])]))
    calls = []
    view.on_click(lambda curve, point: calls.append((curve, point)))
    for hostile in ({"type": "click", "curve": 7}, {"type": "click", "curve": -1}, {"type": "click", "curve": True},
                    {"type": "click", "curve": "0"}, {"type": "click"}, {"type": 3}, "click", None):
        view._on_message(view, hostile, [])
    assert calls == []
    view._on_message(view, {"type": "click", "curve": 1, "point": 0}, [])
    view._on_message(view, {"type": "click", "curve": 0, "point": [1, 2]}, [])  # heatmap points: [row, col]
    assert calls == [(1, 0), (0, None)]


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="figure must be a plotly go.Figure"):
        PlotView({"data": []})  # a spec needs data and layout
    view = PlotView(heatmap([[1]]))
    with pytest.raises(TypeError, match="figure"):
        view.update("not a figure")
    with pytest.raises(TypeError, match="callback must be callable"):
        view.on_click(3)


def test_a_spec_update_sends_what_the_figure_would_and_reencodes_only_changes(monkeypatch):
    """The fast path: a plain dict spec (numpy arrays in it) is sent without plotly's validation, as the same JSON
    a go.Figure of it gives; parts shared with the last spec keep their JSON; ``figure`` is built (validated) lazily."""
    from explorer.apps import _plot
    from explorer.viz._spec import figure_spec, patch

    reference = heatmap(np.arange(6, dtype=np.float32).reshape(2, 3))
    spec = figure_spec(reference)
    assert isinstance(spec["data"][0]["z"], np.ndarray)  # typed arrays decoded back to numpy
    view = PlotView(spec)
    slow = PlotView(reference)
    assert decode(json.loads(view.traces)[0]["z"]).tolist() == decode(json.loads(slow.traces)[0]["z"]).tolist()
    assert json.loads(view.frame) == json.loads(slow.frame)
    encoded = []
    real = _plot.to_json_plotly
    monkeypatch.setattr(_plot, "to_json_plotly", lambda value: encoded.append(value) or real(value))
    moved = patch(spec, layout={"title": {"text": "moved"}})
    view.update(moved)
    assert len(encoded) == 1 and encoded[0]["text"] == "moved"  # only the changed layout entry
    assert view.figure.layout.title.text == "moved" and view.figure.data[0].z.shape == (2, 3)
    view.update(patch(moved, layout={"height": 5}))  # plotly refuses a height under 10: only on validation
    with pytest.raises(ValueError, match="height"):
        view.figure


def test_a_waiting_view_shows_its_text_until_the_first_update():
    view = PlotView.waiting(240, "x-figure", text="computing …")
    state = view.get_state()
    assert state["placeholder"] == "computing …" and json.loads(state["traces"]) == []
    assert json.loads(state["frame"])["height"] == 240 and "x-figure" in view._dom_classes
    assert len(view.figure.data) == 0 and view.figure.layout.annotations[0].text == "computing …"
    view.update(heatmap(np.eye(2)))
    assert view.placeholder == "" and len(json.loads(view.traces)) == 1
    for bad in (0, -5):
        with pytest.raises(ValueError, match="height must be positive"):
            PlotView.waiting(bad)
    for bad in (2.5, True, "240"):
        with pytest.raises(TypeError, match="height must be an int"):
            PlotView.waiting(bad)
    with pytest.raises(ValueError, match="text must not be empty"):
        PlotView.waiting(100, text="")
    with pytest.raises(TypeError, match="text must be a string"):
        PlotView.waiting(100, text=None)
