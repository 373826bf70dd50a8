"""The one callback policy of every app: our messages shown, anything else reduced to its type, never raised."""

import logging

import ipywidgets as W
import pytest

from explorer.apps._callbacks import callback, guarded, quietly
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


def test_runtime_errors_are_shown_too():
    """The layers' and kernels' own refusals are RuntimeErrors (e.g. a fused backend asked for patterns)."""
    target = W.HTML()

    def fail():
        raise RuntimeError("backend='sdpa' never materialises attention scores")

    guarded(fail, target, "x-error")
    assert "never materialises" in target.value


def test_callback_makes_one_guarded_handler_for_observe_and_on_click():
    target, calls = W.HTML("stale"), []
    slider, button = W.IntSlider(0, 0, 10), W.Button()
    slider.observe(callback(lambda: calls.append(slider.value), target, "x-error"), names="value")
    button.on_click(callback(lambda: 1 / 0, target, "x-error", what="run"))
    slider.value = 3
    assert calls == [3] and target.value == ""
    button.click()  # raises inside: shown, not raised
    assert "could not run: ZeroDivisionError" in target.value


def test_quietly_sets_busy_and_clears_it_also_on_error():
    class App:
        _busy = False

    app = App()
    with quietly(app):
        assert app._busy is True
    assert app._busy is False
    with pytest.raises(RuntimeError, match="boom"):
        with quietly(app):
            raise RuntimeError("boom")
    assert app._busy is False
