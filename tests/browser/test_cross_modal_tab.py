"""The "Cross-modal" tab in a real browser: new scene, change the question, the overlay follows the model."""

from __future__ import annotations

import functools
import time

import pytest
import torch

from explorer import record
from explorer.analysis import stack_patterns, upsample_patches
from explorer.data.shapes import generate_scene, question, tokenize
from explorer.models.cross_modal import load_cross_modal
from explorer.viz.cross_modal import normalise
from tests.browser.conftest import KNOWN_OFFLINE, TIMINGS, open_tab

pytestmark = pytest.mark.browser

FIGURE = ".xm-figure.js-plotly-plot"


def _trace_z(page, index: int) -> torch.Tensor:
    return torch.tensor(page.evaluate(
        f"(i) => Array.from(document.querySelector('{FIGURE}').data[i].z, r => Array.from(r, v => "
        "Array.isArray(v) || ArrayBuffer.isView(v) ? Array.from(v) : v))", index), dtype=torch.float32)


@functools.lru_cache(maxsize=None)
def _expected_overlay(seed: int, text: str) -> torch.Tensor:
    """Layer 1, answer token, heads averaged, normalised: computed from the library, not the page (cached: the
    poll below asks again every 100 ms)."""
    model, _card = load_cross_modal()
    scene = generate_scene(seed, size=model.config.image_size, n_objects=3)
    with torch.no_grad(), record(model, "*.cross_attn.hook_pattern") as trace:
        model(scene.image[None], torch.tensor([tokenize(text)]))
    pattern = stack_patterns(trace, "*.cross_attn.hook_pattern")[0, 0]  # (head, token, patch)
    overlay = upsample_patches(pattern[:, 0], model.grid, tuple(scene.image.shape[-2:])).mean(0)
    return torch.from_numpy(normalise(overlay.numpy()))


@pytest.fixture
def xm_page(dashboard_page):
    return open_tab(dashboard_page, "Cross-modal", f"{FIGURE} .main-svg")


def _wait_seed(page, seed: int) -> None:
    page.wait_for_function("(s) => document.querySelector('.xm-seed input')?.value == s", arg=str(seed),
                           timeout=30_000)


def _wait_overlay(page, seed: int, timeout: float = 30.0) -> torch.Tensor:
    """Poll until the page's overlay equals the library's for this seed and the question shown; return it."""
    deadline = time.monotonic() + timeout
    while True:
        text = page.locator(".xm-query input").input_value()
        expected = _expected_overlay(seed, text)
        overlay = _trace_z(page, 1)
        if overlay.shape == expected.shape and torch.allclose(overlay, expected, atol=1e-4, rtol=0):  # fp32 via JSON
            return overlay
        if time.monotonic() > deadline:
            torch.testing.assert_close(overlay, expected, atol=1e-4, rtol=0, msg=lambda m: (
                f"{m}\nthe page shows seed {page.locator('.xm-seed input').input_value()}, question {text!r}; "
                f"{_which_seed(overlay, seed, text)}"))
        page.wait_for_timeout(100)


def _which_seed(overlay: torch.Tensor, seed: int, text: str) -> str:
    """Diagnosis for a mismatch: does the page's overlay belong to a neighbouring scene?"""
    for other in range(max(seed - 2, 0), seed + 3):
        candidate = _expected_overlay(other, text)
        if candidate.shape == overlay.shape and torch.allclose(candidate, overlay, atol=1e-4, rtol=0):
            return f"it is the library's overlay for seed {other}"
    return "it matches none of seeds seed-2 .. seed+2 for this question"


def test_new_scene_and_question_change_the_overlay(xm_page):
    page = xm_page
    seed = int(page.locator(".xm-seed input").input_value())
    overlay_before = _wait_overlay(page, seed)
    start = time.perf_counter()
    page.locator("button.xm-new-scene").click()
    _wait_seed(page, seed + 1)
    overlay_scene = _wait_overlay(page, seed + 1)
    TIMINGS["cross-modal: new scene to updated overlay (s)"] = time.perf_counter() - start
    assert not torch.allclose(overlay_scene, overlay_before)

    page.locator(".xm-kind select").select_option(label="what colour is the <shape>")
    page.wait_for_function("() => document.querySelector('.xm-answer').innerText.includes('what colour is the')",
                           timeout=30_000)
    assert page.locator(".xm-query input").input_value() == question(
        "colour_of_shape", page.locator(".xm-target select").input_value())
    overlay_question = _wait_overlay(page, seed + 1)
    assert not torch.allclose(overlay_question, overlay_scene)
    assert page.locator(".xm-error").count() == 0 and page.errors == []
    assert [url for url in page.failed_requests if not url.startswith(KNOWN_OFFLINE)] == []
