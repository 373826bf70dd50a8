"""BokehWidget: the figure travels as bokeh's own JSON item, BokehJS comes from the installed bokeh on request."""

from __future__ import annotations

from pathlib import Path

import bokeh
import numpy as np
import pytest
from bokeh.models import ColumnDataSource, Range1d
from bokeh.plotting import figure

from explorer.apps._bokeh import BokehWidget


def _figure():
    source = ColumnDataSource({"x": [0, 1], "y": [2, 3]}, name="points")
    fig = figure(width=200, height=150, y_range=Range1d(0, 4, name="y-range"), name="fig")
    fig.scatter("x", "y", source=source)
    return fig


def test_spec_is_the_figure_as_bokeh_serialises_it():
    fig = _figure()
    widget = BokehWidget(fig)
    assert widget.version == bokeh.__version__
    assert widget.spec["root_id"] == fig.id
    roots = widget.spec["doc"]["roots"]
    assert [r["id"] for r in roots] == [fig.id]
    assert widget.sources == {} and widget.ranges == {}


def test_bokehjs_is_sent_only_when_the_page_asks(monkeypatch):
    widget = BokehWidget(_figure())
    sent = []
    monkeypatch.setattr(widget, "send", lambda content, buffers=None: sent.append(content))
    widget._handle_custom_msg({"type": "something else"}, [])
    assert sent == []
    widget._handle_custom_msg({"type": "need-bokehjs"}, [])
    # the installed bokeh's own minified BokehJS, byte for byte (read from its package, not through our helper)
    shipped = (Path(bokeh.__file__).parent / "server" / "static" / "js" / "bokeh.min.js").read_text(encoding="utf-8")
    assert len(sent) == 1 and sent[0]["type"] == "bokehjs"
    assert shipped.strip() in sent[0]["source"] and len(sent[0]["source"]) < len(shipped) + 200  # + BEGIN/END comments
    assert bokeh.__version__ in sent[0]["source"]


def test_update_sends_plain_lists_and_float_ranges():
    widget = BokehWidget(_figure())
    widget.update(sources={"points": {"x": np.array([5, 6]), "y": (7.0, 8.5)}}, ranges={"y-range": (np.float32(1), 9)})
    assert widget.sources == {"points": {"x": [5, 6], "y": [7.0, 8.5]}}
    assert widget.ranges == {"y-range": [1.0, 9.0]}
    assert all(type(v) is float for v in widget.ranges["y-range"])
    widget.show(_figure())  # a new figure: its own data, nothing pending
    assert widget.sources == {} and widget.ranges == {}


@pytest.mark.parametrize("bad", [None, "figure", {"doc": {}}])
def test_refuses_what_is_not_a_bokeh_model(bad):
    with pytest.raises(TypeError, match="figure must be a bokeh model"):
        BokehWidget(bad)


def test_a_page_reporting_the_figure_embedded_calls_the_handlers():
    widget = BokehWidget(_figure())
    calls = []
    widget.on_rendered(lambda: calls.append("a"))
    widget.on_rendered(lambda: calls.append("b"))
    widget._handle_custom_msg({"type": "need-bokehjs-not"}, [])
    assert calls == []
    widget._handle_custom_msg({"type": "rendered"}, [])
    widget._handle_custom_msg({"type": "rendered"}, [])  # re-shown: again
    assert calls == ["a", "b", "a", "b"]
    with pytest.raises(TypeError, match="callback must be callable"):
        widget.on_rendered("not a function")
