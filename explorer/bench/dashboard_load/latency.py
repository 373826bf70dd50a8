"""``latency``: slider -> settled plot, one visitor
------------------------------------------------
In one page load, for each scenario: a ``MutationObserver`` (subtree, attributes, childList, characterData) is
installed on the scenario's figure container, the control is operated (a key press on a slider handle or a
click), and the sample is ``last mutation - input event``, both on the page's ``performance.now()`` clock
(the input time is the key/pointer event's ``timeStamp``), once 400 ms have passed without a further mutation.
A second observer watches the whole tab widget (``Scenario.page``): ``page_latency_s`` runs to the last mutation
anywhere in it, so the figures a control redraws after its main one (the attention tab's model view and head
view, the speech tab's spectrogram) are reported too (``page_median_s``, the "whole tab" column).
So a sample covers the websocket round trip, the kernel's computation and the browser's redraw. First, in the same
run, the one-slider page (the ``visitors`` mode's reference: an IntSlider and a ``go.FigureWidget`` heatmap it
redraws, on its own Voila server with the same ``voila.json``) is measured the same way (its slider's arrow keys),
and every scenario's median is also given as a ratio to that page's median (``ratio_to_one_slider``). The cost tab's
"Does it fit?" button (an analytic formula, no model) is measured the same way as a trivial round trip, so the
scenarios can be read as ratios to it. The Intervene tab's scenario clicks two cells of its layer x head grid
(heads 7 and 8 of layer 3) in turn, so the ablated heads go {7}, {7, 8}, {8}, {}; each click redraws the output
figure, and in three of the four states the kernel reruns MiniLM's layers 3-6 on the pair and on the fixed batch of
8 pairs (the layers before the first ablated one are the clean run's; the empty state is the clean run itself).
Every tab has a scenario for its main control: the receptive-field and attention layer sliders, cross-modal's new
scene, cost scaling's "Run sweep" (the tab's default ops and sizes, within the app's time guard; one redraw at the
end), head to head's shift slider, long range's distance slider, the Intervene grid and speech's example dropdown
(arrow keys step to the next example and back). ``--only`` measures a subset. The machine's load average before and
after goes into the metadata (other work shares the cores). All CSS selectors are in :data:`SELECTORS`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .browser import WATCH_JS, chromium_browser, close_visitor, new_visitor, visit
from pathlib import Path

from .common import DASHBOARD, NOTEBOOKS, QUIET_MS, SELECTORS, TAB_TITLES, Deadline, _fmt, machine_metadata, summarize
from .server import serve

@dataclass(frozen=True)
class Scenario:
    """Open ``tab``, wait for ``ready``; each sample operates ``control`` and watches ``container``."""
    tab: str
    ready: str
    control: str
    container: str
    keys: tuple[str, ...] = ()        # key presses, cycled (empty: click the control)
    controls: tuple[str, ...] = ()    # controls clicked in turn instead of ``control`` (empty: ``control`` only)
    alternate_input: str | None = None  # an input set to alternating values before each click
    alternate_values: tuple[str, ...] = ()
    ready_timeout_s: float = 180.0
    page: str = SELECTORS["dashboard"]  # everything the control may redraw: the dashboard's tabs
    work: str | None = None  # an element whose data-seconds is the deliberate work of the sample (the cost sweep's timing)


SCENARIOS: dict[str, Scenario] = {
    "receptive_field_layers": Scenario(TAB_TITLES["rf"], SELECTORS["rf_ready"], SELECTORS["rf_slider"],
                                       SELECTORS["rf_figure"], keys=("ArrowRight", "ArrowLeft")),
    "attention_layer": Scenario(TAB_TITLES["attn"], SELECTORS["attn_ready"], SELECTORS["attn_slider"],
                                SELECTORS["attn_figure"], keys=("ArrowRight", "ArrowLeft")),
    "cross_modal_new_scene": Scenario(TAB_TITLES["xm"], SELECTORS["xm_ready"], SELECTORS["xm_button"],
                                      SELECTORS["xm_figure"]),
    # the sweep of the tab's default ops and sizes (bounded by the app's time guard), drawn once at its end
    "cost_scaling_run": Scenario(TAB_TITLES["cost"], SELECTORS["cost_figure_ready"], SELECTORS["cost_run"],
                                 SELECTORS["cost_figure"], ready_timeout_s=240.0, work=SELECTORS["cost_done"]),
    "head_to_head_shift": Scenario(TAB_TITLES["h2h"], SELECTORS["h2h_ready"], SELECTORS["h2h_shift"],
                                   SELECTORS["h2h_figure"], keys=("ArrowRight", "ArrowLeft")),
    "long_range_distance": Scenario(TAB_TITLES["lr"], SELECTORS["lr_ready"], SELECTORS["lr_distance"],
                                    SELECTORS["lr_figure"], keys=("ArrowRight", "ArrowLeft")),
    # two heads of layer 3 toggled in turn: ablated {7}, {7, 8}, {8}, {} (the last one is the clean state, which the
    # app reads from its clean run; the others run the pair and the batch of 8 pairs through layers 3-6)
    "intervene_toggle": Scenario(TAB_TITLES["iv"], SELECTORS["iv_ready"], SELECTORS["iv_cell"],
                                 SELECTORS["iv_figure"], controls=(SELECTORS["iv_cell"], SELECTORS["iv_cell_2"],
                                                                   SELECTORS["iv_cell"], SELECTORS["iv_cell_2"])),
    # the next example and back: synthesised speech, its spectrogram and the model's attention redrawn
    "speech_example": Scenario(TAB_TITLES["sp"], SELECTORS["sp_ready"], SELECTORS["sp_example"],
                               SELECTORS["sp_figure"], keys=("ArrowDown", "ArrowUp"), ready_timeout_s=240.0),
}
# the trivial round trip: an analytic formula in the kernel, its answer as text (two n's so the text changes)
ROUND_TRIP = Scenario(TAB_TITLES["cost"], SELECTORS["cost_ready"], SELECTORS["cost_button"], SELECTORS["cost_result"],
                      alternate_input=SELECTORS["cost_n"], alternate_values=("65536", "65537"))
ROUND_TRIP_NAME = "round_trip_cost_calc"
LATENCY_NAMES = (*SCENARIOS, ROUND_TRIP_NAME)


async def open_tab(page, scenario: Scenario, deadline: Deadline) -> None:
    if scenario.tab:  # the one-slider page has no tabs
        await page.locator(SELECTORS["tab"], has_text=scenario.tab).first.click(timeout=deadline.left(30) * 1e3)
    await page.wait_for_selector(scenario.ready, state="visible",
                                 timeout=deadline.left(scenario.ready_timeout_s) * 1e3)


async def one_sample(page, scenario: Scenario, index: int, deadline: Deadline) -> dict:
    """Operate the control once; seconds from the input event to the last mutation of a settled container."""
    if scenario.alternate_input:
        box = page.locator(scenario.alternate_input).first
        await box.fill(scenario.alternate_values[index % len(scenario.alternate_values)], timeout=10_000)
        await box.press("Enter", timeout=10_000)
    if not await page.evaluate("([s, p]) => window.__bench.arm(s, p)", [scenario.container, scenario.page]):
        raise LookupError(f"container {scenario.container!r} or page {scenario.page!r} not found")
    control = page.locator(scenario.controls[index % len(scenario.controls)] if scenario.controls
                           else scenario.control).first
    if scenario.keys:
        await control.focus(timeout=10_000)
        await control.press(scenario.keys[index % len(scenario.keys)], timeout=10_000)
    else:
        await control.click(timeout=10_000)
    await page.wait_for_function("(q) => window.__bench.settled(q)", arg=QUIET_MS, polling=50,
                                 timeout=deadline.left(60) * 1e3)
    done = await page.evaluate("() => window.__bench.finish()")
    if done["input"] is None:
        raise RuntimeError("the input event was not seen")
    page_last = max(done["last"], done["lastPage"] or done["last"])
    work = None
    if scenario.work:
        work = await page.locator(scenario.work).first.get_attribute("data-seconds", timeout=10_000)
    return {"latency_s": (done["last"] - done["input"]) / 1e3, "page_latency_s": (page_last - done["input"]) / 1e3,
            "mutations": done["count"], "work_s": None if work is None else float(work)}


async def run_scenario(page, scenario: Scenario, repeats: int, deadline: Deadline) -> dict:
    """``repeats`` samples; on a missing selector or a timeout, ``{"error": ...}`` with the samples so far."""
    samples: list[float] = []
    page_samples: list[float] = []
    work: list[float] = []
    mutations: list[int] = []
    try:
        await open_tab(page, scenario, deadline)
        await page.evaluate(WATCH_JS)
        for index in range(repeats):
            sample = await one_sample(page, scenario, index, deadline)
            samples.append(sample["latency_s"])
            page_samples.append(sample["page_latency_s"])
            if sample["work_s"] is not None:
                work.append(sample["work_s"])
            mutations.append(sample["mutations"])
    except Exception as error:  # a selector that moved must not end the run
        with contextlib.suppress(Exception):
            await page.evaluate("() => window.__bench && window.__bench.finish()")
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}", "samples_s": samples,
                "selectors": _selectors_of(scenario)}
    stats, page_stats = summarize(samples), summarize(page_samples)
    out = {"samples_s": samples, "median_s": stats["median"], "p95_s": stats["p95"], "summary": stats,
           "page_samples_s": page_samples, "page_median_s": page_stats["median"], "page_p95_s": page_stats["p95"],
           "mutations": mutations, "selectors": _selectors_of(scenario)}
    if work and len(work) == len(samples):  # the control's own cost: each sample less its deliberate work
        out["work_s"] = work
        out["work_median_s"] = summarize(work)["median"]
        out["beyond_work_median_s"] = summarize([s - w for s, w in zip(samples, work)])["median"]
    return out


def _selectors_of(scenario: Scenario) -> dict:
    return {"tab": scenario.tab, "ready": scenario.ready, "control": scenario.control,
            "controls": list(scenario.controls), "container": scenario.container, "page": scenario.page,
            "keys": list(scenario.keys)}


async def latency_page(browser, url: str, repeats: int, deadline: Deadline,
                       only: Sequence[str] | None = None) -> dict:
    """One page: each scenario of ``only`` (default all, the round trip last) ``repeats`` times."""
    visitor = await new_visitor(browser, f"{SELECTORS['dashboard']} {SELECTORS['plot']}")
    chosen = [name for name in LATENCY_NAMES if only is None or name in only]
    try:
        load = await visit(visitor, url, deadline.left(300), None, time.perf_counter())
        scenarios = {}
        if load["saw_plot"]:
            for name in chosen:
                scenario = ROUND_TRIP if name == ROUND_TRIP_NAME else SCENARIOS[name]
                scenarios[name] = await run_scenario(visitor.page, scenario, repeats, deadline)
        else:
            scenarios = {name: {"error": "the dashboard showed no plot: " + "; ".join(load["errors"] + visitor.errors)}
                         for name in chosen}
        base = scenarios.get(ROUND_TRIP_NAME, {}).get("median_s")
        for result in scenarios.values():
            if "median_s" in result and base:
                result["ratio_to_round_trip"] = result["median_s"] / base
        load["errors"] = load["errors"] + visitor.errors
        load["slow_inits"] = visitor.slow_inits
        return {"page_load": load, "scenarios": scenarios}
    finally:
        await close_visitor(visitor, "tab")


# the one-slider page: its slider's handle stepped by arrow keys, its plotly graph watched
ONE_SLIDER_NAME = "one_slider_page"
ONE_SLIDER = Scenario("", f"{SELECTORS['plot']} .main-svg", ".noUi-handle", SELECTORS["plot"],
                      keys=("ArrowRight", "ArrowLeft"), page="body")


async def one_slider_latency(browser, repeats: int, deadline: Deadline) -> dict:
    """The one-slider reference page on its own Voila server (same voila.json): ``repeats`` slider steps."""
    from .visitors import REFERENCE_SOURCE, reference_notebook

    with tempfile.TemporaryDirectory(prefix="bench-one-slider-") as folder:
        Path(folder, "reference.ipynb").write_text(json.dumps(reference_notebook(), indent=1))
        shutil.copy(NOTEBOOKS / "voila.json", Path(folder, "voila.json"))
        with serve(Path(folder), "reference.ipynb", deadline) as server:
            visitor = await new_visitor(browser, SELECTORS["plot"])
            try:
                load = await visit(visitor, server.url, deadline.left(300), None, time.perf_counter())
                if not load["saw_plot"]:
                    return {"error": "the one-slider page showed no plot: " + "; ".join(load["errors"]),
                            "source": REFERENCE_SOURCE}
                result = await run_scenario(visitor.page, ONE_SLIDER, repeats, deadline)
            finally:
                await close_visitor(visitor, "tab")
    return {**result, "source": REFERENCE_SOURCE}


async def latency_command(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    deadline = Deadline(args.timeout)
    async with chromium_browser() as browser:
        meta = machine_metadata(argv, chromium=browser.version, server=args.url or "own Voila",
                                settle_quiet_ms=QUIET_MS, selectors=SELECTORS,
                                measure="performance.now() of the last mutation in the container minus the input "
                                        "event's timeStamp, declared settled after QUIET_MS without mutation; "
                                        "page_*: the last mutation anywhere in the tab widget",
                                timeout_s=args.timeout, only=args.only,
                                # other work on the machine shares its cores: its 1/5/15-minute load, before and after
                                load_average_before=list(os.getloadavg()))
        reference = await one_slider_latency(browser, args.repeats, deadline)
        if args.url is not None:
            result = await latency_page(browser, args.url, args.repeats, deadline, args.only)
        else:
            with serve(NOTEBOOKS, DASHBOARD, deadline) as server:
                result = await latency_page(browser, server.url, args.repeats, deadline, args.only)
    meta["load_average_after"] = list(os.getloadavg())
    base = reference.get("median_s")
    for scenario in result["scenarios"].values():
        if "median_s" in scenario and base:
            scenario["ratio_to_one_slider"] = scenario["median_s"] / base
        if "beyond_work_median_s" in scenario and base:
            scenario["beyond_work_ratio_to_one_slider"] = scenario["beyond_work_median_s"] / base
    return {"metadata": meta, "one_slider_page": reference, **result}



def latency_table(result: dict) -> str:
    load = result["page_load"]
    lines = [f"first plot after {_fmt(load['first_plot_s'])} s; errors: {len(load['errors'])}",
             f"{'scenario':<24} {'n':>3} {'median s':>9} {'p95 s':>7} {'x round trip':>12} {'x one-slider':>12} "
             f"{'whole tab s':>11}"]
    rows = {ONE_SLIDER_NAME: result["one_slider_page"]} if "one_slider_page" in result else {}
    for name, res in {**rows, **result["scenarios"]}.items():
        if "error" in res:
            lines.append(f"{name:<24} error: {res['error'][:120]}")
        else:
            lines.append(f"{name:<24} {len(res['samples_s']):>3} {_fmt(res['median_s'], '.3f'):>9} "
                         f"{_fmt(res['p95_s'], '.3f'):>7} {_fmt(res.get('ratio_to_round_trip')):>12} "
                         f"{_fmt(res.get('ratio_to_one_slider', 1.0 if name == ONE_SLIDER_NAME else None)):>12} "
                         f"{_fmt(res.get('page_median_s'), '.3f'):>11}")
            if "beyond_work_median_s" in res:
                lines.append(f"{'':<24} of which its own work (timing the ops) {_fmt(res['work_median_s'], '.3f')} "
                             f"s; the rest {_fmt(res['beyond_work_median_s'], '.3f')} s = "
                             f"{_fmt(res.get('beyond_work_ratio_to_one_slider'))} x one-slider")
    return "\n".join(lines)

