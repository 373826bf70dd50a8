"""The "Cost scaling" tab in a real browser: a sweep with progress, points on the plot, the guard's refusal."""

from __future__ import annotations

import json
import time

import pytest

from explorer.analysis.cost import cost
from explorer.apps.cost_scaling import DEFAULT_OPS, _op_kwargs
from tests.browser.conftest import KNOWN_OFFLINE, TIMINGS, open_tab
from tests.browser.dashboard_server import ROOT

pytestmark = pytest.mark.browser

FIGURE = ".cost-figure.js-plotly-plot"


@pytest.fixture
def cost_page(dashboard_page):
    return open_tab(dashboard_page, "Cost scaling", f"{FIGURE} .main-svg")


def test_tab_opens_on_the_shipped_sweep_labelled_with_its_machine(cost_page):
    shipped = json.loads((ROOT / "assets" / "benchmarks" / "scaling_cpu.json").read_text())
    page = cost_page
    title = page.evaluate(f"() => document.querySelector('{FIGURE}').layout.title.text")
    assert shipped["metadata"]["date"][:10] in title and shipped["metadata"]["processor"] in title
    traces = page.evaluate(f"() => Object.fromEntries(document.querySelector('{FIGURE}').data.map("
                           "t => [t.name, [Array.from(t.x), Array.from(t.y)]]))")
    for record in shipped["records"]:  # every shipped point on the page, per sequence and head
        xs, ys = traces[f"{record['op']} (shipped)"]
        per = record["batch"] * record["heads"]
        assert ys[xs.index(record["n"])] == pytest.approx(record["median_s"] / per, rel=1e-9), record["op"]
    assert "cost-shipped" in page.inner_html(".cost-status")


def test_sweep_plots_points_and_guard_refuses(cost_page):
    page = cost_page
    start = time.perf_counter()
    page.locator("button.cost-run").click()
    page.wait_for_selector(".cost-status .cost-done", timeout=120_000)
    # every selected op's measured-time trace holds its 4 points
    page.wait_for_function(f"""() => {{
        const data = document.querySelector('{FIGURE}').data;
        return {list(DEFAULT_OPS)!r}.every(op => {{ const t = data.find(t => t.name === op); return t && t.x.length === 4; }});
    }}""", timeout=30_000)
    TIMINGS["cost: default sweep click to plotted (s)"] = time.perf_counter() - start
    points = int(page.locator(".cost-status .cost-done").get_attribute("data-points"))
    assert points == 5 * 4  # 5 default operations x n = 2^8 .. 2^11
    names = page.evaluate(f"() => document.querySelector('{FIGURE}').data.map(t => t.name)")
    assert set(DEFAULT_OPS) <= set(names) and "attention_fused analytic" in names
    # measured peak memory on the page grows with n for the materialised attention (points are real, not placeholders)
    memory = page.evaluate(f"() => Array.from(document.querySelector('{FIGURE}').data.find("
                           "t => t.name === 'attention_math memory').y)")
    assert len(memory) == 4 and all(b > a for a, b in zip(memory, memory[1:]))
    # each analytic memory line on the page goes through its middle measured point with the library model's shape
    traces = page.evaluate(f"() => Object.fromEntries(document.querySelector('{FIGURE}').data.map("
                           "t => [t.name, [Array.from(t.x), Array.from(t.y)]]))")
    for op in DEFAULT_OPS:
        (xs, ys), (_, measured) = traces[f"{op} analytic"], traces[f"{op} memory"]
        mid = len(xs) // 2
        assert len(xs) == 4 and ys[mid] == pytest.approx(measured[mid], rel=1e-9), op
        model = [cost(op, int(n), **_op_kwargs(int(n), 64)).peak_memory for n in xs]
        for y, c in zip(ys, model):
            assert y / ys[mid] == pytest.approx(c / model[mid], rel=1e-9), op
    assert page.locator(".cost-exponents tr", has_text="this machine").count() == 5

    page.locator(".cost-calc-n input").fill("65536")
    page.locator(".cost-calc-n input").press("Enter")
    start = time.perf_counter()
    page.locator("button.cost-calc").click()
    page.wait_for_selector(".cost-calc-result .cost-refused", timeout=30_000)
    TIMINGS["cost: guard refusal at n=65536, click to message (s)"] = time.perf_counter() - start
    assert "34.4 GB" in page.inner_text(".cost-calc-result")
    assert page.locator(".cost-error").count() == 0 and page.errors == []
    assert [url for url in page.failed_requests if not url.startswith(KNOWN_OFFLINE)] == []
