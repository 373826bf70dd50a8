"""``visitors``: how long N concurrent visitors wait for the first plot, what the server holds, when it lets go
-----------------------------------------------------------------------------------------------------------------
For each N (and each ``--preheat`` pool size) a fresh Voilà serves ``notebooks/dashboard.ipynb`` from ``notebooks/``
(so ``notebooks/voila.json`` applies; the cull settings below override its own), token-less, on a free port of
127.0.0.1. One Chromium opens N pages, one browser context each; all pages are created first and their
navigations fired together (``start_spread_s`` says within how long).

* ``first_plot_s``: seconds from the page's navigation start (``performance.now()`` is measured from it) to the
  first moment a plot element (``SELECTORS["plot"]``) inside the dashboard has a non-empty ``el.data``, a drawn
  ``.main-svg`` and a non-zero bounding box. An init script checks every 50 ms, so that is its resolution.
* ``errors``: error outputs on the page (stderr output areas, the apps' error blocks, "Error displaying widget"
  and similar texts), page errors and console errors. anywidget's "Failed to initialize model" (a model that took
  over 2 s, which still renders) is counted apart as ``slow_inits``, as the browser tests do.
* ``kernel_rss_mb``: the RSS of each visitor's kernel process when that visitor saw its first plot (the kernel id
  is read from the page's ``jupyter-config-data``, the process found by its connection file name).
* ``peak_total_rss_mb``: the largest sum of RSS over the Voilà process and all its descendants (kernels), sampled
  every 0.5 s with psutil while the visitors load. RSS counts shared pages once per process, so this is an upper
  bound of what the tree really holds.
* ``cull_s``: seconds from closing the pages until every visitor kernel is gone. Voilà 0.5.13 does not serve the
  kernel *list* (``GET /api/kernels`` is redirected to ``/voila/files/...`` and refused) but it does serve
  ``GET /api/kernels/<id>`` without a token (200 while the kernel lives, 404 after), so each visitor's kernel is
  polled by id; kernel processes in the tree are counted as well. ``--close tab`` closes a page the way a browser
  closes a tab: ``beforeunload`` runs and Voilà's page sends a ``POST /voila/api/shutdown/<id>`` beacon. On this
  token-less server that beacon is refused (403 "'_xsrf' argument missing from POST", voila issue #1458), so the
  kernel stays; ``shutdown_beacons`` counts the beacons' statuses from the server log. ``--close drop`` closes the
  page without ``beforeunload`` (a lost connection). Either way the server's culler is what frees the kernel,
  after ``--cull-timeout`` seconds idle, checked every ``--cull-interval`` seconds
  (``--MappingKernelManager.cull_idle_timeout`` / ``cull_interval``, overriding voila.json's 900 s / 60 s), so
  ``cull_s`` is about the idle timeout (counted from the kernel's last message, a little before the close) plus up
  to one cull interval. ``culled_by_server`` counts the culler's
  "Culling ..." log lines after the close, so the JSON says what freed the kernels.
* ``--preheat K`` starts the server with ``--VoilaConfiguration.preheat_kernel=True
  --VoilaConfiguration.default_pool_size=K`` (Voilà runs the notebook in K kernels before anyone asks) and waits
  until the pool's kernels are started and quiet before the visitors come. Pooled kernels are never culled and the
  pool refills after each use, so a preheated server ends with K kernels, not zero. ``--pool-manager fixed``
  (default) launches Voilà through ``explorer/deploy/voila_pool.py``, whose kernel manager keeps the culler off a
  kernel just handed out of the pool (Voilà's own manager culls it when the pool waited longer than the idle
  timeout: see that module) and makes refills wait for the visitors' kernels; ``voila`` uses Voilà's own.
* A reference page (one IntSlider and one plotly ``go.FigureWidget`` heatmap it updates) is served by the same
  kind of Voilà (same ``voila.json``) from a temporary folder; its median first plot over ``--repeats`` visits
  gives ``first_plot_ratio = median(dashboard, N=1, no preheat) / median(reference)``. N=1 runs of the dashboard
  are repeated ``--repeats`` times too, each on a fresh server.

Percentiles are ``numpy.percentile(..., method="linear")`` over the visitors that saw a plot (``saw_plot``);
visitors that did not are counted in ``all_saw_plot`` / ``saw_plot_count``, not in the percentiles.

Limits: the browser, the server and the kernels share this machine's cores, so at larger N the browser's own
work is part of the wait. Everything is bounded: N <= 32, pool size <= 32, a global ``--timeout`` deadline and a
timeout on every wait; only 127.0.0.1 / localhost is ever contacted (the pages' requests to other hosts, such as
the Voilà template's CDN stylesheet, are aborted); every server is stopped (terminate, then
kill its process group and any kernel still alive) and the browser closed, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .browser import Visitor, chromium_browser, close_visitor, new_visitor, visit
from .common import DASHBOARD, NOTEBOOKS, SELECTORS, Deadline, DeadlineReached, _fmt, machine_metadata, summarize
from .server import RssSampler, VoilaServer, _cull_line, measure_cull, serve, wait_pool_ready

async def run_round(browser, url: str, n: int, plot_selector: str, deadline: Deadline, *,
                    server: VoilaServer | None, load_timeout: float, close: str, cull_wait: float | None,
                    pool: int = 0) -> dict:
    """Open ``n`` pages at once on ``url``, wait for their first plots, then close them and time the cull."""
    visitors: list[Visitor] = []
    try:
        for _ in range(n):
            visitors.append(await new_visitor(browser, plot_selector))
        timeout = deadline.left(load_timeout)
        sampler = RssSampler(server.psproc) if server is not None else contextlib.nullcontext()
        with sampler:
            t0 = time.perf_counter()
            results = await asyncio.gather(*(visit(v, url, timeout, server, t0) for v in visitors))
        if server is not None:
            server.remember_tree()
        for visitor, result in zip(visitors, results):
            result["errors"] = result["errors"] + visitor.errors
            result["slow_inits"] = visitor.slow_inits
        out = {"visitors": results, "start_spread_s": max(r["start_offset_s"] for r in results),
               "peak_total_rss_mb": sampler.peak_total_mb if server else None,
               "peak_kernels": sampler.peak_kernels if server else None,
               "cpu_s": sampler.cpu_s if server else None,
               "rss_samples": sampler.samples if server else 0}
        log_offset = len(server.log_text()) if server is not None else 0
        await asyncio.gather(*(close_visitor(v, close) for v in visitors))
        visitors = []
        if cull_wait is not None:
            kernel_ids = [r["kernel_id"] for r in results if r["kernel_id"]]
            out["cull"] = await measure_cull(url, server, kernel_ids, pool, log_offset, deadline.left(cull_wait))
        return out
    finally:
        await asyncio.gather(*(close_visitor(v, "drop") for v in visitors))


def summarize_run(n: int, preheat: int | None, rounds: list[dict]) -> dict:
    """One (n, preheat) entry: the rounds' visitors pooled, their percentiles, the largest peak and cull time."""
    done = [r for r in rounds if "visitors" in r]
    visitors = [v for r in done for v in r["visitors"]]
    stats = summarize([v["first_plot_s"] for v in visitors])
    culls = [r.get("cull", {}).get("cull_s") for r in done]
    peaks = [r["peak_total_rss_mb"] for r in done if r.get("peak_total_rss_mb") is not None]
    return {
        "n": n, "preheat": preheat, "repeats": len(rounds), "visitors": visitors,
        "p50_first_plot_s": stats["p50"], "p95_first_plot_s": stats["p95"], "first_plot": stats,
        "all_saw_plot": bool(visitors) and all(v["saw_plot"] for v in visitors) and len(done) == len(rounds),
        "saw_plot_count": sum(v["saw_plot"] for v in visitors),
        "error_outputs": sum(v["error_outputs"] for v in visitors),
        "errors": sum(len(v["errors"]) for v in visitors),
        "peak_total_rss_mb": max(peaks) if peaks else None,
        "kernel_rss_mb": [v["kernel_rss_mb"] for v in visitors],
        "cull_s": None if not culls or None in culls else max(culls),
        "cull_mechanism": _mechanism([r.get("cull", {}) for r in done]),
        "rounds": [{k: v for k, v in r.items() if k != "visitors"} for r in rounds],
    }


def _mechanism(culls: list[dict]) -> str | None:
    culled = sum(c.get("culled_by_server") or 0 for c in culls)
    closed = sum(c.get("shut_down_on_close") or 0 for c in culls)
    if not culls or (culled == 0 and closed == 0):
        return None
    if culled and closed:
        return "mixed: culled by the server and shut down on page close"
    return "culled by the server (idle timeout)" if culled else "shut down on page close (Voila's beacon)"


async def measure_setting(browser, args: argparse.Namespace, n: int, preheat: int, deadline: Deadline) -> dict:
    """All rounds of one (n, preheat): ``--repeats`` for N=1, else one; a fresh server each round."""
    repeats = args.repeats if n == 1 else 1
    rounds: list[dict] = []
    plot = f"{SELECTORS['dashboard']} {SELECTORS['plot']}"
    cull_wait = args.cull_timeout + 2 * args.cull_interval + 30
    for _ in range(repeats):
        try:
            if args.url is not None:
                rounds.append(await run_round(browser, args.url, n, plot, deadline, server=None,
                                              load_timeout=args.load_timeout, close=args.close, cull_wait=cull_wait))
                continue
            with serve(NOTEBOOKS, DASHBOARD, deadline, cull_timeout=args.cull_timeout,
                       cull_interval=args.cull_interval, preheat=preheat,
                       pool_fix=args.pool_manager == "fixed") as server:
                pool_s = await asyncio.to_thread(wait_pool_ready, server, preheat, deadline) if preheat else None
                result = await run_round(browser, server.url, n, plot, deadline, server=server,
                                         load_timeout=args.load_timeout, close=args.close, cull_wait=cull_wait,
                                         pool=preheat)
                log = server.log_text()
                result.update(server_start_s=server.start_s, pool_ready_s=pool_s, cull_settings_in_log=_cull_line(log),
                              preheated_kernels_used=log.count("Using pre-heated kernel"))
                rounds.append(result)
        except Exception as error:  # this round's failure is its result; the next N still runs
            rounds.append({"error": f"{type(error).__name__}: {str(error)[:500]}"})
            if isinstance(error, DeadlineReached):
                break
    return summarize_run(n, None if args.url else preheat, rounds)



REFERENCE_SOURCE = """\
import numpy as np
import ipywidgets as W
import plotly.graph_objects as go
from IPython.display import display

slider = W.IntSlider(value=0, min=0, max=20, description="seed")
figure = go.FigureWidget(go.Heatmap(z=np.random.default_rng(0).random((32, 32))))


def update(change):
    figure.data[0].z = np.random.default_rng(change["new"]).random((32, 32))


slider.observe(update, names="value")
display(W.VBox([slider, figure]))
"""


def reference_notebook() -> dict:
    """A one-cell notebook: an IntSlider and a ``go.FigureWidget`` heatmap the slider updates."""
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "bench-reference", "metadata": {},
                       "outputs": [], "source": REFERENCE_SOURCE.splitlines(keepends=True)}],
            "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                        "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


async def measure_reference(browser, args: argparse.Namespace, deadline: Deadline) -> dict:
    """The reference page's first plot, ``--repeats`` visits, each on a fresh server (same voila.json)."""
    samples: list[float | None] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-reference-") as folder:
        Path(folder, "reference.ipynb").write_text(json.dumps(reference_notebook(), indent=1))
        shutil.copy(NOTEBOOKS / "voila.json", Path(folder, "voila.json"))
        for _ in range(args.repeats):
            try:
                with serve(Path(folder), "reference.ipynb", deadline) as server:
                    result = await run_round(browser, server.url, 1, SELECTORS["plot"], deadline, server=server,
                                             load_timeout=args.load_timeout, close="tab", cull_wait=None)
                visitor = result["visitors"][0]
                samples.append(visitor["first_plot_s"])
                errors += visitor["errors"]
            except Exception as error:
                errors.append(f"{type(error).__name__}: {str(error)[:500]}")
                if isinstance(error, DeadlineReached):
                    break
    stats = summarize(samples)
    return {"what": "one IntSlider + one go.FigureWidget heatmap, 1 visitor, fresh server per repeat",
            "source": REFERENCE_SOURCE, "first_plot_s": samples, "median_first_plot_s": stats["median"],
            "first_plot": stats, "errors": errors}


async def visitors_command(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    deadline = Deadline(args.timeout)
    async with chromium_browser() as browser:
        meta = machine_metadata(argv, chromium=browser.version, server=args.url or "own Voila per round",
                                cull={"cull_idle_timeout_s": args.cull_timeout, "cull_interval_s": args.cull_interval,
                                      "flags": ["--MappingKernelManager.cull_idle_timeout",
                                                "--MappingKernelManager.cull_interval"],
                                      "applies": "own servers only" if args.url is None else "not set (--url)"},
                                close=args.close, pool_manager=args.pool_manager,
                                preheat_flags=["--VoilaConfiguration.preheat_kernel=True",
                                               "--VoilaConfiguration.default_pool_size=K"],
                                load_timeout_s=args.load_timeout, timeout_s=args.timeout)
        reference = None if args.no_reference else await measure_reference(browser, args, deadline)
        runs = []
        for preheat in args.preheat:
            for n in args.n:
                runs.append(await measure_setting(browser, args, n, preheat, deadline))
    single = next((r for r in runs if r["n"] == 1 and not r["preheat"]), None)
    ratio = None
    if reference and single and reference["median_first_plot_s"] and single["p50_first_plot_s"]:
        ratio = single["p50_first_plot_s"] / reference["median_first_plot_s"]
    if reference is not None:
        reference["first_plot_ratio"] = ratio
    return {"metadata": meta, "reference": reference, "first_plot_ratio": ratio, "runs": runs}



def _cpu(run: dict) -> str:
    """Server and browser CPU seconds of the run's last round (see ``RssSampler``)."""
    cpu = next((r["cpu_s"] for r in reversed(run["rounds"]) if r.get("cpu_s")), None)
    return "-" if cpu is None else f"{cpu['server']:.0f}/{cpu['browser']:.0f}"


def visitors_table(result: dict) -> str:
    lines = []
    ref = result.get("reference")
    if ref:
        lines.append(f"reference page: median first plot {_fmt(ref['median_first_plot_s'])} s over "
                     f"{ref['first_plot']['count']} visit(s); dashboard N=1 / reference = "
                     f"{_fmt(result['first_plot_ratio'])}")
    lines.append(f"{'n':>3} {'pool':>4} {'saw':>7} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'peak MB':>8} "
                 f"{'kernel MB':>9} {'cull s':>7} {'errs':>4} {'cpu srv/brw s':>13}  freed by")
    for run in result["runs"]:
        kernels = [k for k in run["kernel_rss_mb"] if k is not None]
        kernel_mb = float(np.median(kernels)) if kernels else None
        pool = "?" if run["preheat"] is None else str(run["preheat"])
        lines.append(
            f"{run['n']:>3} {pool:>4} {run['saw_plot_count']:>3}/{len(run['visitors']):<3} "
            f"{_fmt(run['p50_first_plot_s']):>7} {_fmt(run['p95_first_plot_s']):>7} "
            f"{_fmt(run['first_plot']['max']):>7} "
            f"{_fmt(run['peak_total_rss_mb'], '.0f'):>8} {_fmt(kernel_mb, '.0f'):>9} {_fmt(run['cull_s'], '.1f'):>7} "
            f"{run['error_outputs'] + run['errors']:>4} {_cpu(run):>13}  {run['cull_mechanism'] or '-'}")
        for r in run["rounds"]:
            if "error" in r:
                lines.append(f"      round error: {r['error'][:150]}")
    return "\n".join(lines)


