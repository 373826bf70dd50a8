"""The "Head to head" app in a real browser, in Voila (the dashboard tab) and in JupyterLab (a scratch notebook that
displays ``HeadToHeadApp()``): it draws, choosing a model and an image in the page makes it draw the library's
probabilities and maps, no console errors, and the layout fits at 1280 and 1920 px."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch

from explorer.analysis.equivariance import shift_images
from explorer.analysis.looks_at import looks_at
from explorer.apps.head_to_head import IG_STEPS
from explorer.data.digits import digits_dataset
from explorer.models.head_to_head import load_head_to_head
from explorer.viz.cross_modal import normalise
from tests.browser.conftest import KNOWN_OFFLINE, TIMINGS, open_tab
from tests.browser.dashboard_server import ROOT
from tests.browser.lab import LAB_KNOWN_OFFLINE, app_notebook, layout_problems

pytestmark = pytest.mark.browser

FIGURE = ".h2h-figure.js-plotly-plot"
PROBS = ".h2h-probs.js-plotly-plot"
VERDICT = ".h2h-status .h2h-verdict"
WIDTHS = (1280, 1920)
ARTIFACTS = ROOT / "tests" / "browser" / "_artifacts"
SCRATCH = "h2h_scratch.ipynb"


@functools.lru_cache(maxsize=None)
def _expected(model: str, index: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [10], normalised IG map [24, 24]) from the library, not the page (cached: polled)."""
    net = load_head_to_head(model)[0]
    images, _labels = digits_dataset("test", canvas=24, placement="centre")
    image = shift_images(images[index:index + 1], 0, shift, "circular")  # (1, 1, 24, 24)
    with torch.no_grad():
        probs = net(image).softmax(-1)[0].numpy()
    return probs, normalise(looks_at(net, image[0], steps=IG_STEPS).ig.numpy())


def _drawn(page) -> dict:
    """What the page shows: the computed (model, index, shift) from the status line, the bars, the overlay."""
    return page.evaluate(f"""() => {{
        const v = document.querySelector('{VERDICT}'), p = document.querySelector('{PROBS}'),
              f = document.querySelector('{FIGURE}');
        if (!v || !p || !p.data || !f || !f.data) return null;
        return {{model: v.dataset.model, index: Number(v.dataset.index), shift: Number(v.dataset.shift),
                 probs: Array.from(p.data[0].y), overlay: Array.from(f.data[1].z, r => Array.from(r))}};
    }}""")


def _wait_library(page, model: str, index: int, shift: int = 0, timeout: float = 30.0) -> dict:
    """Poll until the page shows (model, index, shift) with the library's probabilities and IG map."""
    probs, overlay = _expected(model, index, shift)
    deadline = time.monotonic() + timeout
    while True:
        seen = _drawn(page)
        if seen and (seen["model"], seen["index"], seen["shift"]) == (model, index, shift):
            if (np.allclose(seen["probs"], probs, atol=1e-5, rtol=0)
                    and np.allclose(seen["overlay"], overlay, atol=1e-4, rtol=0)):  # fp32 through JSON
                return seen
        if time.monotonic() > deadline:
            shown = None if seen is None else (seen["model"], seen["index"], seen["shift"])
            assert shown == (model, index, shift), f"the page shows {shown}"
            np.testing.assert_allclose(seen["probs"], probs, atol=1e-5, rtol=0)
            np.testing.assert_allclose(seen["overlay"], overlay, atol=1e-4, rtol=0)
        page.wait_for_timeout(100)


def _interact(page, where: str) -> None:
    """Model, image, random image and shift through the page's controls; each time the library's numbers."""
    first = _wait_library(page, "cnn", 0)
    start = time.perf_counter()
    page.locator(".h2h-model select").select_option(index=1)  # the ViT (MODELS order)
    vit = _wait_library(page, "vit", 0)
    TIMINGS[f"head to head ({where}): model change to drawn (s)"] = time.perf_counter() - start
    assert not np.allclose(vit["probs"], first["probs"])
    assert page.locator(".h2h-attention-controls").is_visible()
    box = page.locator(".h2h-index input")
    box.fill("123")
    box.press("Enter")
    _wait_library(page, "vit", 123)
    page.locator(".h2h-model select").select_option(index=0)  # a CNN: the attention controls go, a note says why
    _wait_library(page, "cnn", 123)
    assert not page.locator(".h2h-attention-controls").is_visible()
    assert "no attention" in page.locator(".h2h-note").inner_text()
    start = time.perf_counter()
    page.locator("button.h2h-random").click()
    page.wait_for_function(f"() => document.querySelector('{VERDICT}')?.dataset.index !== '123'", timeout=30_000)
    index = int(page.locator(VERDICT).get_attribute("data-index"))
    _wait_library(page, "cnn", index)
    TIMINGS[f"head to head ({where}): random image to drawn (s)"] = time.perf_counter() - start
    handle = page.locator(".h2h-shift .noUi-handle")
    handle.focus()
    handle.press("ArrowRight")
    handle.press("ArrowRight")
    _wait_library(page, "cnn", index, 2)
    assert page.locator(".h2h-error").count() == 0


def _fits(page, scope: str, name: str) -> dict[int, list[str]]:
    """Layout problems at each width (and a screenshot of the app per width)."""
    problems = {}
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(1000)  # the width watcher's resize, plotly's relayout
        problems[width] = layout_problems(page, scope)
        # JupyterLab scrolls inside its own panel: a window tall enough to show the whole app at once
        app = page.locator(".h2h-app >> visible=true").first
        page.set_viewport_size({"width": width, "height": int(min(app.bounding_box()["height"] + 200, 4000))})
        app.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / f"{name}-head-to-head-{width}.png"))
    page.set_viewport_size({"width": WIDTHS[0], "height": 1000})
    return problems


def test_voila_tab_draws_the_library_numbers_and_fits(dashboard_page):
    page = dashboard_page
    start = time.perf_counter()
    open_tab(page, "Head to head", f"{FIGURE} .main-svg", timeout=90_000)
    page.wait_for_selector(".h2h-flips.js-plotly-plot .main-svg", state="visible", timeout=30_000)
    TIMINGS["head to head (voila): tab open to plot visible (s)"] = time.perf_counter() - start
    try:
        _interact(page, "voila")
        assert _fits(page, ".jp-OutputArea-output", "voila") == {w: [] for w in WIDTHS}
        assert page.locator(".h2h-error").count() == 0 and page.errors == []
        assert [url for url in page.failed_requests if not url.startswith(KNOWN_OFFLINE)] == []
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
        open_tab(page, "Receptive fields", ".rf-figure.js-plotly-plot .main-svg")  # as the other tests expect


@pytest.fixture(scope="module")
def lab_page(lab):
    """A scratch notebook displaying ``HeadToHeadApp()`` in the session's JupyterLab, all cells run."""
    server, browser = lab
    with app_notebook(browser, "HeadToHeadApp", SCRATCH, FIGURE, "head to head", width=WIDTHS[0],
                      server=server) as nb:
        yield nb


def test_lab_notebook_draws_the_library_numbers_and_fits(lab_page):
    nb = lab_page
    outputs = nb.outputs()
    assert [o["text"] for o in outputs if o["type"] == "error"] == []
    assert [o["text"] for o in outputs if o["type"] == "stream" and o["name"] == "stderr"] == []
    nb.page.wait_for_function("() => document.querySelectorAll('.h2h-app .js-plotly-plot .main-svg').length >= 4",
                              timeout=30_000)
    _interact(nb.page, "lab")
    assert _fits(nb.page, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output", "lab") == {
        w: [] for w in WIDTHS}
    assert nb.page.locator("text=Error displaying widget").count() == 0
    assert nb.errors == [] and [u for u in nb.failed_requests if not u.startswith(LAB_KNOWN_OFFLINE)] == []
