"""Cost scaling: measured time and peak memory of convolution and attention variants, with the analytic curves."""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path

import ipywidgets as W
import numpy as np

from explorer.apps._callbacks import callback
from explorer.apps._comm_guard import harden
from explorer.apps._layout import WidthWatcher, figure_box, row
from explorer.apps._plot import PlotView
from explorer.analysis.cost import OPS, cost
from explorer.bench.scaling import Measurement, fit_by_op, measure
from explorer.guard import RequestRefused, check, human_bytes, memory_budget
from explorer.viz.cost import OP_COLOURS, CostSeries, cost_scaling_spec

__all__ = ["CostScalingApp", "gpu_benchmarks", "shipped_sweep"]

log = logging.getLogger(__name__)
DEFAULT_OPS = ("attention_math", "attention_fused", "sliding_window_attention", "linear_attention", "conv1d")
# One colour per op of OPS, in order: explorer.viz.cost's nine-colour palette and, for the tenth op, lsh_attention,
# a cyan (at least 95 apart, Euclidean in 0-255 RGB, from each of the nine; nearest: #72b7b2).
COLOURS = dict(zip(OPS, [*OP_COLOURS, "#17becf"]))
# Time guard: a point is refused when its estimated run time (5 calls: warm-up, 3 repeats, memory pass) at a
# conservative CPU throughput exceeds the per-point budget, so one click never blocks the kernel for long.
CPU_FLOPS_PER_S = 2e10
POINT_TIME_BUDGET_S = 10.0
SWEEP_TIME_BUDGET_S = 60.0  # and a whole sweep (one click) at most this long, summed over its points
BENCHMARKS = Path(__file__).resolve().parents[2] / "assets" / "benchmarks"


def _op_kwargs(n: int, d: int) -> dict:
    """Size arguments of one sweep point: width ``d``, a window of 128 and blocks of 64 (at most ``n``); LSH
    attention takes ``explorer.analysis.cost``'s defaults (8 buckets, 2 rounds, chunks of 64, clipped to ``n``)."""
    return {"d": d, "window": min(128, n), "block": min(64, n)}


def gpu_benchmarks(folder: Path = BENCHMARKS) -> list[dict]:
    """GPU measurements shipped in ``assets/benchmarks``, as records ``{op, n, median_s, device_name, label}``.

    Two sources: ``scaling_*.json`` from :mod:`explorer.bench.scaling` and ``attention_*.json`` from
    :mod:`explorer.bench.attention` (the fused Triton kernel and SDPA's kernels; forward, no mask). A record counts
    as a GPU result when its own ``device`` starts with ``cuda`` (the file's metadata names the CUDA device whenever
    one exists, even for CPU runs). Both benchmarks may run several sequences and heads at once, so times are
    divided by ``batch * heads`` to put them on the same footing as this app's sweep (one sequence, one head).
    """
    records = []
    for path in sorted(folder.glob("scaling_*.json")):
        payload = _read(path)
        meta = payload.get("metadata") or {}
        for r in payload.get("records", []):
            if str(r.get("device", "cpu")).startswith("cuda"):
                records.append({**r, "median_s": r["median_s"] / (r.get("batch", 1) * r.get("heads", 1)),
                                "device_name": meta.get("device") or r["device"], "label": r["op"]})
    for path in sorted(folder.glob("attention_*.json")):
        payload = _read(path)
        meta = payload.get("metadata") or {}
        for r in payload.get("records", []):
            if (str(r.get("device", "cpu")).startswith("cuda") and r.get("mode") == "fwd" and r.get("mask") == "full"
                    and r.get("ms") and not r.get("error")):
                records.append({"op": "attention_fused", "n": r["n"], "median_s": r["ms"] / 1e3 / (r["batch"] * r["heads"]),
                                "device_name": meta.get("device_name") or meta.get("device") or r["device"],
                                "label": f"{r['backend']} d={r['d']} {r.get('dtype', '')}".strip()})
    return records


def shipped_sweep(path: Path = BENCHMARKS / "scaling_cpu.json") -> tuple[list[Measurement], str]:
    """The CPU sweep shipped in ``assets/benchmarks`` (``python -m explorer.bench.scaling``), per sequence and head.

    Its calls ran ``batch`` sequences of ``heads`` heads at once; times and peaks are divided by ``batch * heads``
    so they sit on the same footing as this app's live sweep (one sequence, one head). Returns the measurements
    and a label naming where and when they were taken (``""`` and no measurements when the file is missing).
    """
    payload = _read(path) if path.exists() else {}
    meta = payload.get("metadata") or {}
    rows = []
    for r in payload.get("records", []):
        if str(r.get("device", "cpu")) != "cpu" or r.get("op") not in OPS:
            continue
        per = r.get("batch", 1) * r.get("heads", 1)
        rows.append(Measurement(**{**{k: r[k] for k in Measurement.__dataclass_fields__},
                                   "median_s": r["median_s"] / per, "q1_s": r["q1_s"] / per, "q3_s": r["q3_s"] / per,
                                   "peak_bytes": int(r["peak_bytes"] / per), "batch": 1, "heads": 1}))
    if not rows:
        return [], ""
    threads = meta.get("torch_threads")
    device = f"{meta.get('device', 'cpu')} ({meta.get('processor', '?')}"
    device += f", {threads} threads)" if threads else ")"
    label = f"shipped sweep: {device}, {str(meta.get('date', '?'))[:10]}, d={rows[0].d}"
    return rows, label


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("unreadable benchmark file %s", path)
        return {}


class CostScalingApp:
    """Run a sweep on this machine and see time and memory versus n on log-log axes, analytic curves overlaid.

    Every size is checked by the memory guard first (``explorer.guard.check``); refused sizes are skipped and
    listed. Measured time is compared with FLOPs and measured peak memory with the analytic peak, both scaled
    through the middle measured point: the shape (the exponent) is the claim, not the constant. The constants do
    differ: the measured peak excludes the inputs, and the sliding-window and block-sparse benchmark ops
    materialise their chunked scores where the model assumes a fused kernel.

    After a run: ``measurements`` (list of ``Measurement``) and ``exponents``, as returned by
    ``explorer.bench.scaling.fit_by_op``: {op: {"time": slope, "time_ci": (low, high), "memory": ..., "memory_ci":
    ...}}.
    """

    def __init__(self, ops=DEFAULT_OPS, min_log2: int = 8, max_log2: int = 11, d: int = 64) -> None:
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"ops must be among {OPS}, got unknown {unknown}")
        style = {"description_width": "90px"}
        self.ops = W.SelectMultiple(options=OPS, value=tuple(ops), rows=len(OPS), description="operations",
                                    style=style, layout=W.Layout(width="380px"))
        self.sizes = W.IntRangeSlider(value=(min_log2, max_log2), min=5, max=16, description="log2 n", style=style,
                                      layout=W.Layout(width="380px"))
        self.d = W.Dropdown(options=[16, 32, 64, 128], value=d, description="width d", style=style,
                            layout=W.Layout(width="200px"))
        self.run_button = W.Button(description="Run sweep", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress", style=style)
        self.status = W.HTML()
        self.table = W.HTML()
        self.calc_op = W.Dropdown(options=OPS, value="attention_math", description="op", style=style,
                                  layout=W.Layout(width="300px"))
        self.calc_n = W.BoundedIntText(value=65_536, min=1, max=2 ** 24, description="n", style=style,
                                       layout=W.Layout(width="200px"))
        self.calc_button = W.Button(description="Does it fit?")
        self.calc_result = W.HTML()
        for widget, name in ((self.ops, "cost-ops"), (self.sizes, "cost-sizes"), (self.run_button, "cost-run"),
                             (self.progress, "cost-progress"), (self.status, "cost-status"), (self.table, "cost-table"),
                             (self.calc_op, "cost-calc-op"), (self.calc_n, "cost-calc-n"),
                             (self.calc_button, "cost-calc"), (self.calc_result, "cost-calc-result")):
            widget.add_class(name)
        self.sweep_seconds: float | None = None  # wall-clock of the last live sweep's timing loop
        self.measurements: list = []
        self.exponents: dict = {}
        self.shipped, self.shipped_label = shipped_sweep()
        self.shipped_exponents = fit_by_op(self.shipped)
        self._gpu = [{**r, "colour": COLOURS.get(r["op"], "#333")} for r in gpu_benchmarks()]
        self.figure = PlotView(self._figure(), "cost-figure")
        self._draw_table()
        self.status.value = ("<span class='cost-shipped'>Showing the " + html.escape(self.shipped_label or
                             "(no shipped sweep found)") + " (open markers). <b>Run sweep</b> adds this machine's "
                             "points (filled).</span>")
        self.run_button.on_click(callback(self.run, self.status, "cost-error", what="run", clear=False))
        self.calc_button.on_click(callback(self._calculate, self.calc_result, "cost-error", clear=False))
        self.widget = W.VBox([
            row([self.ops, W.VBox([self.sizes, self.d, row([self.run_button, self.progress], align="center"),
                                   self.status], layout=W.Layout(flex="1 1 380px"))]),
            row([figure_box(self.figure, 900, min_width=360)]),
            self.table,
            W.HTML("<b>What fits in memory?</b> (analytic peak activations vs this kernel's budget, "
                   f"{human_bytes(memory_budget())})"),
            row([self.calc_op, self.calc_n, self.calc_button]),
            self.calc_result,
            WidthWatcher(),
        ])
        self.widget.add_class("cost-app")
        harden(self.widget, self.status, "cost-error")

    def _series(self, measurements: list, suffix: str, symbol: str, analytic: bool) -> list:
        """One :class:`CostSeries` per op of ``measurements``; analytic shapes (time ∝ FLOPs, memory ∝ the model's
        peak) scaled through the middle point when ``analytic``."""
        out = []
        for op in OPS:
            points = sorted((m for m in measurements if m.op == op), key=lambda m: m.n)
            if not points:
                continue
            ns = np.array([m.n for m in points], dtype=float)
            times = np.array([m.median_s for m in points])
            peaks = np.array([max(m.peak_bytes, 1) for m in points], dtype=float)
            flops = memory = None
            if analytic:
                model = [cost(op, m.n, **_op_kwargs(m.n, m.d)) for m in points]
                f = np.array([c.flops for c in model], dtype=float)
                p = np.array([c.peak_memory for c in model], dtype=float)
                mid = len(ns) // 2  # analytic shapes drawn through the middle measurement
                flops, memory = f * times[mid] / f[mid], p * peaks[mid] / p[mid]
            out.append(CostSeries(op, suffix, ns, times, peaks, COLOURS[op], symbol, flops, memory))
        return out

    def _figure(self) -> dict:
        """The shipped sweep (open markers), this machine's live sweep (filled, with the analytic shapes through
        it; through the shipped points while there is none) and any GPU records."""
        live = self.measurements
        series = self._series(self.shipped, " (shipped)", "circle-open", analytic=not live)
        series += self._series(live, "", "circle", analytic=True)
        title = self.shipped_label + ("; filled: this machine, now" if live else "")
        return cost_scaling_spec(series, self._gpu, title=title)

    # --- actions ---------------------------------------------------------------------------------------
    def run(self) -> None:
        """Measure the selected ops at n = 2^min .. 2^max (guarded), then redraw."""
        ops = list(self.ops.value)
        if not ops:
            raise ValueError("select at least one operation")
        low, high = self.sizes.value
        sizes = [2 ** p for p in range(low, high + 1)]
        d = self.d.value
        plan, refused, planned_s = [], [], 0.0
        for op in ops:
            for n in sizes:
                kwargs = _op_kwargs(n, d)
                try:
                    estimate = check(op, n, **kwargs)
                except RequestRefused as error:
                    refused.append(str(error))
                    continue
                seconds = 5 * estimate.flops / CPU_FLOPS_PER_S
                if seconds > POINT_TIME_BUDGET_S:
                    refused.append(f"{op} at n={n} would take about {seconds:.0f} s (budget {POINT_TIME_BUDGET_S:.0f} s)")
                elif planned_s + seconds > SWEEP_TIME_BUDGET_S:
                    refused.append(f"{op} at n={n}: the sweep would exceed {SWEEP_TIME_BUDGET_S:.0f} s in all")
                else:
                    planned_s += seconds
                    plan.append((op, n, kwargs))
        self.progress.max, self.progress.value = max(len(plan), 1), 0
        self.measurements = []
        started = time.perf_counter()
        for op, n, kwargs in plan:
            self.measurements.append(measure(op, n, repeats=3, warmup=1, **kwargs))
            self.progress.value += 1
        self.sweep_seconds = time.perf_counter() - started  # the timing itself (what the latency bench subtracts)
        self._draw()
        note = "" if not refused else ("<br><span class='cost-refused'>Refused by the memory/time guard: "
                                       + html.escape("; ".join(refused[:4])) + (" …" if len(refused) > 4 else "")
                                       + "</span>")
        self.status.value = (f"<span class='cost-done' data-points='{len(self.measurements)}' "
                             f"data-seconds='{self.sweep_seconds:.4f}'>measured {len(self.measurements)} points in "
                             f"{self.sweep_seconds:.2f} s</span>{note}")

    def _draw(self) -> None:
        """Fit exponents of the live sweep and show it beside the shipped one."""
        self.exponents = fit_by_op(self.measurements)
        self.figure.update(self._figure())
        self._draw_table()

    def _draw_table(self) -> None:
        rows = []
        for source, fits in (("this machine", self.exponents), ("shipped", self.shipped_exponents)):
            for op, fit in fits.items():
                time_cell = f"{fit['time']:.2f} [{fit['time_ci'][0]:.2f}, {fit['time_ci'][1]:.2f}]"
                memory_cell = (f"{fit['memory']:.2f} [{fit['memory_ci'][0]:.2f}, {fit['memory_ci'][1]:.2f}]"
                               if "memory" in fit else "n/a")
                rows.append(f"<tr><td>{op}</td><td>{source}</td><td>{time_cell}</td><td>{memory_cell}</td></tr>")
        self.table.value = ("<table class='cost-exponents'><tr><th>op</th><th>sweep</th>"
                            "<th>time exponent [95% CI]</th><th>memory exponent [95% CI]</th></tr>" + "".join(rows)
                            + "</table>"
                            "<small>Dotted: analytic model (time ∝ FLOPs, memory ∝ analytic peak activations), "
                            "both scaled through the middle measured point -- compare slopes, not heights: the "
                            "measured peak leaves out the inputs, and the sliding-window and block-sparse ops "
                            "here store their chunked scores, which the fused-kernel model does not. Exponents are "
                            "log-log slopes; small sizes are dominated by fixed per-call costs, so time slopes "
                            "below the analytic ones are expected there. Shipped points are per sequence and head "
                            "(the sweep's batched times divided by batch × heads).</small>")

    def _calculate(self) -> None:
        op, n = self.calc_op.value, self.calc_n.value
        try:
            need = check(op, n, **_op_kwargs(n, self.d.value))
            self.calc_result.value = (f"<span class='cost-fits'>✓ {op} at n = {n:,} needs {human_bytes(need.peak_memory)}"
                                      f" of activations and {need.flops:.3g} FLOPs: fits in the budget.</span>")
        except RequestRefused as error:
            self.calc_result.value = f"<span class='cost-refused' style='color:#b00020'>✗ {html.escape(str(error))}</span>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
