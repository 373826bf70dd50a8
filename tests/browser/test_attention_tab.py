"""The "Attention maps" tab in a real browser: type a sentence, switch layer and head, long inputs, model view."""

from __future__ import annotations

import time

import pytest
import torch

from explorer import record
from explorer.analysis import stack_patterns
from explorer.apps.attention_maps import HEATMAP_MAX, PRESETS
from explorer.models import load_pretrained
from tests.browser.conftest import KNOWN_OFFLINE, TIMINGS, open_tab
from tests.browser.head_view import click_token_and_check, view_ready

pytestmark = pytest.mark.browser

HEATMAP = ".attn-heatmap.js-plotly-plot"
SENTENCE = "The cat sat on the mat because it was warm."


def _patterns(text: str) -> torch.Tensor:
    """(layer, head, query, key) recorded from the library's model, independently of the page."""
    pretrained = load_pretrained()
    encoding = pretrained.tokenizer.encode(text)
    with torch.no_grad(), record(pretrained.model, "*.hook_pattern") as trace:
        pretrained.model(encoding.input_ids)
    return stack_patterns(trace)[:, 0]


def _z(page) -> list[list[float]]:
    return page.evaluate(f"() => Array.from(document.querySelector('{HEATMAP}').data[0].z, r => Array.from(r))")


def _title(page) -> str:
    return page.evaluate(f"() => document.querySelector('{HEATMAP}').layout.title.text")


def _wait_title(page, text: str, timeout: float = 30_000) -> None:
    page.wait_for_function(f"(t) => document.querySelector('{HEATMAP}')?.layout.title.text === t", arg=text,
                           timeout=timeout)


def _wait_tokens(page, n: int, timeout: float = 60_000) -> None:
    page.wait_for_function("(n) => document.querySelector('.attn-status .attn-status-line')?.dataset.nTokens == n",
                           arg=str(n), timeout=timeout)


@pytest.fixture
def attention_page(dashboard_page):
    return open_tab(dashboard_page, "Attention maps", f"{HEATMAP} .main-svg")


def test_tab_renders_without_errors(attention_page):
    page = attention_page
    view_ready(page)  # the head view embeds itself once BokehJS is in the page (asked for on first render)
    assert page.locator(".attn-head-view .bk-Canvas, .attn-head-view canvas").count() >= 1
    # the other figures follow once the page has reported the head view embedded
    page.wait_for_selector(".attn-model-view.js-plotly-plot", state="visible", timeout=30_000)
    # the streamed statistics: distance histogram (heads x 11 buckets), each head's shares summing to 1
    page.locator(".attn-histogram.js-plotly-plot .main-svg").first.scroll_into_view_if_needed()
    z = page.evaluate("() => Array.from(document.querySelector('.attn-histogram.js-plotly-plot').data[2].z, "
                      "r => Array.from(r))")
    assert len(z) == 12 and all(len(row) == 11 and abs(sum(row) - 1) < 1e-4 for row in z)  # fp32 sums
    assert page.locator(".attn-error").count() == 0 and page.errors == []


def test_sentence_layer_head_change_the_plot(attention_page):
    page = attention_page
    reference = _patterns(SENTENCE)
    n = reference.shape[-1]
    page.locator(".attn-text textarea").fill(SENTENCE)
    page.locator("button.attn-run").click()
    _wait_tokens(page, n)
    _wait_title(page, "layer 1, mean of all heads")
    z1 = torch.tensor(_z(page))
    torch.testing.assert_close(z1, reference[0].mean(0), atol=1e-5, rtol=0)  # fp32 through JSON

    start = time.perf_counter()
    handle = page.locator(".attn-layer .noUi-handle")
    handle.focus()
    handle.press("ArrowRight")
    _wait_title(page, "layer 2, mean of all heads")
    TIMINGS["attention: layer slider to heatmap update, 13 tokens (s)"] = time.perf_counter() - start
    z2 = torch.tensor(_z(page))
    assert not torch.allclose(z1, z2)
    torch.testing.assert_close(z2, reference[1].mean(0), atol=1e-5, rtol=0)

    page.locator(".attn-head select").select_option(label="3")
    _wait_title(page, "layer 2, head 3")
    torch.testing.assert_close(torch.tensor(_z(page)), reference[1, 2], atol=1e-5, rtol=0)
    assert page.locator(".attn-error").count() == 0


def test_model_view_click_opens_head(attention_page):
    page = attention_page
    # subplot of layer 4, head 6 is number 3 * 12 + 6 = 42 (plotly numbers subplots from 1)
    page.locator(".attn-model-view .draglayer g.x42y42 .nsewdrag").click()
    _wait_title(page, "layer 4, head 6")


def test_head_view_click_isolates_a_tokens_lines(attention_page):
    page = attention_page
    page.locator(".attn-text textarea").fill(SENTENCE)
    page.locator("button.attn-run").click()
    reference = _patterns(SENTENCE)
    tokens = load_pretrained().tokenizer.encode(SENTENCE).tokens
    _wait_tokens(page, len(tokens))
    page.locator(".attn-head select").select_option(label="all (mean)")
    handle = page.locator(".attn-layer .noUi-handle")
    handle.focus()
    for _ in range(6):
        handle.press("ArrowLeft")
    _wait_title(page, "layer 1, mean of all heads")
    view_ready(page)
    start = time.perf_counter()
    checked = click_token_and_check(page, tokens, reference[0], query=tokens.index("it"))
    TIMINGS["voila head view: click, check and restore (s)"] = time.perf_counter() - start
    TIMINGS["voila head view: strong lines checked in pixels"] = checked["strong lines checked in pixels"]
    assert page.errors == []


@pytest.mark.parametrize("preset, n_tokens", [("long text (128 tokens)", 128),
                                              ("long text (512 tokens, truncated)", 512)])
def test_long_inputs_render_and_stay_responsive(attention_page, preset, n_tokens):
    page = attention_page
    start = time.perf_counter()
    page.locator(".attn-preset select").select_option(label=preset)
    _wait_tokens(page, n_tokens)
    side = min(n_tokens, HEATMAP_MAX)
    page.wait_for_function(f"(s) => document.querySelector('{HEATMAP}').data[0].z.length === s", arg=side,
                           timeout=60_000)
    TIMINGS[f"attention: {n_tokens} tokens, preset to rendered heatmap (s)"] = time.perf_counter() - start
    if n_tokens > HEATMAP_MAX:
        assert "aggregated over 2×2 token blocks" in _title(page)  # the UI says what is aggregated
        assert "truncated" in page.inner_text(".attn-notice")
    layer = int(page.locator(".attn-layer .widget-readout").inner_text())
    start = time.perf_counter()
    handle = page.locator(".attn-layer .noUi-handle")
    handle.focus()
    handle.press("ArrowLeft" if layer > 1 else "ArrowRight")
    expected_layer = layer - 1 if layer > 1 else layer + 1
    page.wait_for_function(f"(l) => document.querySelector('{HEATMAP}').layout.title.text.startsWith('layer ' + l)",
                           arg=str(expected_layer), timeout=30_000)
    TIMINGS[f"attention: {n_tokens} tokens, layer slider to heatmap update (s)"] = time.perf_counter() - start
    assert page.locator(".attn-error").count() == 0 and page.errors == []
    assert [url for url in page.failed_requests if not url.startswith(KNOWN_OFFLINE)] == []
    assert preset in PRESETS
