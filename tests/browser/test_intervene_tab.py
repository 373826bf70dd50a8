"""The "Intervene" tab in a real browser (Voila): it draws the pair's similarity as the library computes it; clicking
a cell of the layer x head grid in Chromium zero-ablates that head, and the page then shows (status and figure) the
similarity of a fresh ``intervene(zero_ablation(...))`` run, for the pair and for every pair of the fixed batch;
clicking it again restores the clean numbers. Layout and width are checked for every tab in test_dashboard.py."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer import intervene
from explorer.analysis.intervention import zero_ablation
from explorer.analysis.pair_intervention import fixed_batch
from explorer.apps._callbacks import single_thread
from explorer.apps.intervene import DEFAULT_A, DEFAULT_B
from explorer.models import load_pretrained
from tests.browser.conftest import KNOWN_OFFLINE, TIMINGS, open_tab

pytestmark = pytest.mark.browser

OUTPUT = ".iv-output.js-plotly-plot"
HEADS = ".iv-heads.js-plotly-plot"
READING = ".iv-status .iv-reading"
FLOAT32 = 1e-5  # cosine of float32 embeddings: padded batch (app) vs one sentence at a time (here), through JSON
CELL = (5, 11)  # layer 6, head 12


@functools.lru_cache(maxsize=None)
def _library(ablated: tuple[tuple[int, int], ...]) -> tuple[float, np.ndarray]:
    """(the default pair's similarity, the fixed batch's similarities) with ``ablated`` zero-ablated, each
    sentence encoded on its own (no padding): an independent path to the app's numbers."""
    pretrained = load_pretrained()
    model, tokenizer = pretrained.model, pretrained.tokenizer
    units: dict[str, list[int]] = {}
    for layer, head in ablated:
        units.setdefault(f"blocks.{layer}.attn.hook_z", []).append(head)

    def embed(text: str) -> torch.Tensor:
        return model(tokenizer.encode(text).input_ids).mean_pooled()[0]  # (embed,)

    def similarity(a: str, b: str) -> float:
        with torch.no_grad():
            if units:
                with intervene(model, zero_ablation(model, units)):
                    return float(F.cosine_similarity(embed(a), embed(b), dim=0))
            return float(F.cosine_similarity(embed(a), embed(b), dim=0))

    with single_thread():  # beside the kernel on 2 shared cores, one thread is faster
        return similarity(DEFAULT_A, DEFAULT_B), np.array([similarity(a, b) for a, b, _ in fixed_batch()])


def _drawn(page) -> dict | None:
    return page.evaluate(f"""() => {{
        const r = document.querySelector('{READING}'), o = document.querySelector('{OUTPUT}');
        if (!r || !o || !o.data) return null;
        return {{ablated: r.dataset.ablated, similarity: Number(r.dataset.similarity),
                 clean: Number(r.dataset.cleanSimilarity), pair: Array.from(o.data[1].y),
                 batch: Array.from(o.data[3].y), cleanBatch: Array.from(o.data[2].y)}};
    }}""")


def _wait(page, ablated: tuple[tuple[int, int], ...], timeout: float = 30.0) -> dict:
    """Poll until the page shows ``ablated`` with the library's numbers (status and output figure)."""
    want = ",".join(f"{l}.{h}" for l, h in ablated)
    pair, batch = _library(ablated)
    deadline = time.monotonic() + timeout
    while True:
        seen = _drawn(page)
        if seen and seen["ablated"] == want and abs(seen["similarity"] - pair) < FLOAT32 \
                and abs(seen["pair"][0] - pair) < FLOAT32 and np.allclose(seen["batch"], batch, atol=FLOAT32, rtol=0):
            return seen
        if time.monotonic() > deadline:
            assert seen is not None, "the page shows no reading"
            assert seen["ablated"] == want
            assert abs(seen["similarity"] - pair) < FLOAT32, (seen["similarity"], pair)
            np.testing.assert_allclose(seen["pair"], [pair], atol=FLOAT32, rtol=0)
            np.testing.assert_allclose(seen["batch"], batch, atol=FLOAT32, rtol=0)
        page.wait_for_timeout(100)


def test_voila_tab_toggles_a_head_and_draws_the_library_numbers(dashboard_page):
    page = dashboard_page
    start = time.perf_counter()
    open_tab(page, "Intervene", f"{OUTPUT} .main-svg", timeout=120_000)
    page.wait_for_selector(f"{HEADS} .main-svg", state="visible", timeout=30_000)
    TIMINGS["intervene (voila): tab open to plot visible (s)"] = time.perf_counter() - start
    try:
        clean = _wait(page, ())
        clean_pair, clean_batch = _library(())
        assert abs(clean["clean"] - clean_pair) < FLOAT32
        np.testing.assert_allclose(clean["cleanBatch"], clean_batch, atol=FLOAT32, rtol=0)
        cell = page.locator(f"button.iv-cell-{CELL[0]}-{CELL[1]}")
        start = time.perf_counter()
        cell.click()
        seen = _wait(page, (CELL,))
        TIMINGS["intervene (voila): toggle to drawn (s)"] = time.perf_counter() - start
        assert seen["similarity"] != pytest.approx(clean_pair, abs=1e-4)  # this head matters for this pair
        # the heads figure's third panel is each head's own ablation effect: at this cell, the toggle's change
        effect = page.evaluate(f"() => document.querySelector('{HEADS}').data[2].z[{CELL[0]}][{CELL[1]}]")
        assert effect == pytest.approx(_library((CELL,))[0] - clean_pair, abs=2 * FLOAT32)
        assert "mod-active" in (cell.get_attribute("class") or "")  # the page shows the toggle pressed
        cell.click()
        _wait(page, ())
        assert page.locator(".iv-error").count() == 0 and page.errors == []
        assert [url for url in page.failed_requests if not url.startswith(KNOWN_OFFLINE)] == []
    finally:
        open_tab(page, "Receptive fields", ".rf-figure.js-plotly-plot .main-svg")  # as the other tests expect
