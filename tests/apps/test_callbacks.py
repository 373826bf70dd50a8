"""The one callback policy of every app: our messages shown, anything else reduced to its type, never raised."""

import logging

import ipywidgets as W

from explorer.apps._callbacks import guarded
from explorer.guard import RequestRefused


def test_success_clears_the_message_unless_told_not_to():
    target = W.HTML("old error")
    assert guarded(lambda: None, target, "x-error") and target.value == ""
    target.value = "measured 3 points"
    assert guarded(lambda: None, target, "x-error", clear=False) and target.value == "measured 3 points"


def test_our_errors_are_shown_escaped():
    target = W.HTML()

    def refuse():
        raise RequestRefused("attention_math at n=65536 would need <34.4 GB>")

    assert not guarded(refuse, target, "x-error")
    assert target.value == ("<div class='x-error' style='color:#b00020'>⚠ attention_math at n=65536 would need "
                            "&lt;34.4 GB&gt;</div>")


def test_other_errors_show_only_their_type_and_are_logged(caplog):
    target = W.HTML()

    def crash():
        raise KeyError("internal detail /secret/path")

    with caplog.at_level(logging.ERROR, logger="explorer.apps"):
        assert not guarded(crash, target, "x-error", what="run")
    assert "could not run: KeyError" in target.value and "secret" not in target.value
    assert "secret" in caplog.text  # the traceback goes to the server log


def test_runtime_errors_shown_only_where_asked():
    target = W.HTML()

    def fail():
        raise RuntimeError("backend='sdpa' never materialises attention scores")

    guarded(fail, target, "x-error")
    assert "could not update: RuntimeError" in target.value
    guarded(fail, target, "x-error", shown=(ValueError, RuntimeError))
    assert "never materialises" in target.value


def test_redraw_replaces_the_widget_and_closes_the_old_one():
    import plotly.graph_objects as go

    from explorer.apps._callbacks import figure_slot, redraw

    first, slot = figure_slot(go.Figure(go.Scatter(x=[1], y=[1])), "x-figure")
    second = redraw(slot, go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), "x-figure")
    assert slot.children == (second,) and first.comm is None  # closed: its front-end model is released
    assert "x-figure" in second._dom_classes and list(second.data[0].y) == [3, 4]
