"""The "Long range" app in a real browser, in Voila (the dashboard tab) and in JupyterLab (a scratch notebook that
displays ``LongRangeApp()``): it draws; moving the distance, drawing a new example and choosing a head in the page
makes it draw the shipped models' answers and the recorded attention for that sequence; the receptive-field lines sit
at the fields of the models' graphs; no console errors; the layout fits at 1280 and 1920 px."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch

from explorer import record
from explorer.analysis import receptive_field
from explorer.data.sequences import long_range_batch
from explorer.models.long_range import MODELS, load_long_range_model
from tests.browser.conftest import KNOWN_OFFLINE, TIMINGS, open_tab
from tests.browser.dashboard_server import ROOT
from tests.browser.lab import LAB_KNOWN_OFFLINE, app_notebook, layout_problems

pytestmark = pytest.mark.browser

CURVES = ".lr-curves.js-plotly-plot"
SEQUENCE = ".lr-sequence.js-plotly-plot"
VERDICT = ".lr-status .lr-verdict"
WIDTHS = (1280, 1920)
ARTIFACTS = ROOT / "tests" / "browser" / "_artifacts"
SCRATCH = "long_range_scratch.ipynb"


@functools.lru_cache(maxsize=None)
def _expected(distance: int, seed: int, head: int = -1) -> tuple[str, np.ndarray]:
    """(the answers string ``cnn:1,...``, the last layer's attention row from the later token) from the library."""
    batch = long_range_batch([distance], seed=seed)
    answers = []
    row = None
    with torch.no_grad():
        for name in MODELS:
            model = load_long_range_model(name)[0]
            p = float(torch.softmax(model(batch.inputs), -1)[0, 1])
            answers.append(f"{name}:{int(p >= 0.5)}")
            if name == "attention":
                with record(model, "blocks.*.attn.hook_pattern") as trace:
                    model(batch.inputs)
                last = trace[f"blocks.{len(model.blocks) - 1}.attn.hook_pattern"][0, :, int(batch.second[0])]
                row = (last.mean(0) if head == -1 else last[head]).numpy()
    return ",".join(answers), row


def _drawn(page) -> dict | None:
    return page.evaluate(f"""() => {{
        const v = document.querySelector('{VERDICT}'), s = document.querySelector('{SEQUENCE}');
        if (!v || !s || !s.data) return null;
        return {{distance: Number(v.dataset.distance), seed: Number(v.dataset.seed), answers: v.dataset.answers,
                 row: Array.from(s.data[0].y), title: s.layout.title.text}};
    }}""")


def _wait_library(page, distance: int, seed: int, head: int = -1, timeout: float = 30.0) -> dict:
    """Poll until the page shows (distance, seed) with the library's answers and attention row."""
    answers, row = _expected(distance, seed, head)
    deadline = time.monotonic() + timeout
    while True:
        seen = _drawn(page)
        if seen and (seen["distance"], seen["seed"]) == (distance, seed) and seen["answers"] == answers \
                and len(seen["row"]) == len(row) and np.allclose(seen["row"], row, atol=1e-5, rtol=0):
            return seen
        if time.monotonic() > deadline:
            assert seen is not None, "the page shows no verdict"
            assert (seen["distance"], seen["seed"]) == (distance, seed), seen["title"]
            assert seen["answers"] == answers
            np.testing.assert_allclose(seen["row"], row, atol=1e-5, rtol=0)  # fp32 through JSON
        page.wait_for_timeout(100)


def _interact(page, where: str) -> None:
    _wait_library(page, 8, 0)
    fields = page.evaluate(f"() => document.querySelector('{CURVES}').layout.shapes"
                           ".filter(s => (s.name || '').startsWith('field ')).map(s => [s.name, s.x0])")
    want = {f"field {n}": receptive_field(load_long_range_model(n)[0].features, spatial_dims=1).output.size[0]
            for n in ("cnn", "dilated_cnn")}
    assert dict(fields) == want
    start = time.perf_counter()
    handle = page.locator(".lr-distance .noUi-handle")
    handle.focus()
    for _ in range(4):  # 8 -> 12: beyond the plain CNN's field of 11
        handle.press("ArrowRight")
    _wait_library(page, 12, 0)
    TIMINGS[f"long range ({where}): distance change to drawn (s)"] = time.perf_counter() - start
    page.locator("button.lr-next").click()
    _wait_library(page, 12, 1)
    page.locator(".lr-head select").select_option(label="2")
    _wait_library(page, 12, 1, head=1)
    assert page.locator(".lr-error").count() == 0


def _fits(page, scope: str, name: str) -> dict[int, list[str]]:
    problems = {}
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(1000)  # the width watcher's resize, plotly's relayout
        problems[width] = layout_problems(page, scope)
        app = page.locator(".lr-app >> visible=true").first
        page.set_viewport_size({"width": width, "height": int(min(app.bounding_box()["height"] + 200, 4000))})
        app.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / f"{name}-long-range-{width}.png"))
    page.set_viewport_size({"width": WIDTHS[0], "height": 1000})
    return problems


def test_voila_tab_draws_the_library_numbers_and_fits(dashboard_page):
    page = dashboard_page
    start = time.perf_counter()
    open_tab(page, "Long range", f"{SEQUENCE} .main-svg", timeout=90_000)
    page.wait_for_selector(f"{CURVES} .main-svg", state="visible", timeout=30_000)
    TIMINGS["long range (voila): tab open to plot visible (s)"] = time.perf_counter() - start
    try:
        _interact(page, "voila")
        assert _fits(page, ".jp-OutputArea-output", "voila") == {w: [] for w in WIDTHS}
        assert page.locator(".lr-error").count() == 0 and page.errors == []
        assert [url for url in page.failed_requests if not url.startswith(KNOWN_OFFLINE)] == []
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
        open_tab(page, "Receptive fields", ".rf-figure.js-plotly-plot .main-svg")  # as the other tests expect


@pytest.fixture(scope="module")
def lab_page(lab):
    """A scratch notebook displaying ``LongRangeApp()`` in the session's JupyterLab, all cells run."""
    server, browser = lab
    with app_notebook(browser, "LongRangeApp", SCRATCH, SEQUENCE, "long range", width=WIDTHS[0],
                      server=server) as nb:
        yield nb


def test_lab_notebook_draws_the_library_numbers_and_fits(lab_page):
    nb = lab_page
    outputs = nb.outputs()
    assert [o["text"] for o in outputs if o["type"] == "error"] == []
    assert [o["text"] for o in outputs if o["type"] == "stream" and o["name"] == "stderr"] == []
    nb.page.wait_for_function("() => document.querySelectorAll('.lr-app .js-plotly-plot .main-svg').length >= 2",
                              timeout=30_000)
    _interact(nb.page, "lab")
    assert _fits(nb.page, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output", "lab") == {
        w: [] for w in WIDTHS}
    assert nb.page.locator("text=Error displaying widget").count() == 0
    assert nb.errors == [] and [u for u in nb.failed_requests if not u.startswith(LAB_KNOWN_OFFLINE)] == []
