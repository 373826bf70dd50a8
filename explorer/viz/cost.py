"""Cost-scaling figure: measured time and peak memory against n on log-log axes, analytic shapes dotted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz._spec import SkeletonCache, patch, quick_axes

__all__ = ["CostSeries", "cost_scaling_figure", "cost_scaling_spec", "OP_COLOURS"]

OP_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d"]


@dataclass(frozen=True)
class CostSeries:
    """One operation's points from one source.

    ``suffix`` is appended to the trace names (``""`` for this machine's live sweep, e.g. ``" (shipped)"``);
    ``flops`` and ``memory`` are the analytic curves already scaled to the measurements (or None: not drawn).
    """

    op: str
    suffix: str
    ns: np.ndarray
    times: np.ndarray
    peaks: np.ndarray
    colour: str
    symbol: str = "circle"
    flops: np.ndarray | None = None
    memory: np.ndarray | None = None


def _values(a) -> list[float]:
    return np.asarray(a, dtype=float).tolist()  # plain JSON numbers: hover text and tests read them as lists


def cost_scaling_figure(series: Sequence[CostSeries], gpu: Sequence[dict] = (), title: str | None = None) -> go.Figure:
    """Two log-log panels (time per call, peak activation memory), one marker trace per series and panel.

    Trace names: ``"{op}{suffix}"`` (time), ``"{op}{suffix} ∝ FLOPs"``, ``"{op}{suffix} memory"``,
    ``"{op}{suffix} analytic"``; GPU records (``{op, n, median_s, label, device_name}``) as open diamonds.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("time per call (s)", "peak activation memory (bytes)"),
                        horizontal_spacing=0.1)
    for s in series:
        name = f"{s.op}{s.suffix}"
        marker = {"color": s.colour, "size": 8, "symbol": s.symbol}
        fig.add_trace(go.Scatter(x=_values(s.ns), y=_values(s.times), mode="markers", name=name,
                                 legendgroup=s.op, marker=marker), row=1, col=1)
        fig.add_trace(go.Scatter(x=_values(s.ns), y=_values(s.peaks), mode="markers", name=f"{name} memory",
                                 legendgroup=s.op, showlegend=False,
                                 marker={**marker, "symbol": f"square{s.symbol[6:]}"}), row=1, col=2)
        if s.flops is not None:
            fig.add_trace(go.Scatter(x=_values(s.ns), y=_values(s.flops), mode="lines", name=f"{name} ∝ FLOPs",
                                     legendgroup=s.op, showlegend=False, line={"color": s.colour, "dash": "dot"}),
                          row=1, col=1)
        if s.memory is not None:
            fig.add_trace(go.Scatter(x=_values(s.ns), y=_values(s.memory), mode="lines", name=f"{name} analytic",
                                     legendgroup=s.op, showlegend=False, line={"color": s.colour, "dash": "dot"}),
                          row=1, col=2)
    for record in gpu:  # shown beside the CPU points, labelled with their device
        fig.add_trace(go.Scatter(x=[record["n"]], y=[record["median_s"]], mode="markers",
                                 marker={"symbol": "diamond-open", "color": record.get("colour", "#333")},
                                 name=f"{record['label']} ({record['device_name']})", showlegend=False), row=1, col=1)
    fig.update_xaxes(type="log", title="n (sequence length; image side for conv2d)")
    fig.update_yaxes(type="log")
    fig.update_layout(height=450, margin={"l": 50, "r": 10, "t": 60 if title else 40, "b": 50},
                      legend={"font": {"size": 10}}, uirevision="cost")
    if title:
        fig.update_layout(title={"text": title, "font": {"size": 12}, "x": 0, "xanchor": "left"})
    return quick_axes(fig)


_SKELETONS = SkeletonCache()


def cost_scaling_spec(series: Sequence[CostSeries], gpu: Sequence[dict] = (), title: str | None = None) -> dict:
    """:func:`cost_scaling_figure` as a spec dict (see :mod:`explorer.viz._spec`): the first call per structure (each
    series' op, source, colour, symbol and which analytic curves it has; the GPU records; the title) builds the
    figure with validation (28 ms for the tab's 38 traces); later calls replace only the series' numbers."""
    series, gpu = list(series), list(gpu)
    key = (tuple((s.op, s.suffix, s.colour, s.symbol, s.flops is not None, s.memory is not None) for s in series),
           tuple((r["n"], r["median_s"], r["label"], r["device_name"], r.get("colour")) for r in gpu), title)
    skeleton, fresh = _SKELETONS.get(key, lambda: cost_scaling_figure(series, gpu, title))
    if fresh:
        return skeleton
    data: dict[int, dict] = {}
    for s in series:  # the builder's trace order: time, memory, then the analytic curves it has
        ns = _values(s.ns)
        for values in (s.times, s.peaks, s.flops, s.memory):
            if values is not None:
                data[len(data)] = {"x": ns, "y": _values(values)}
    return patch(skeleton, data=data)
