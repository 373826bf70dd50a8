"""Attention figures: head view (bokeh), matrix heatmap, model-view grid and per-head statistics (plotly).

Why two libraries: the head view is many linked line glyphs whose isolation on click must run in the browser
without a round trip (bokeh's ``CustomJS`` on a ``TapTool``); the matrix views are heatmaps and bars that the
apps rebuild from their numbers on every change (shown by ``explorer.apps._plot.PlotView``), and that export to
PNG/SVG through kaleido.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz._spec import SkeletonCache, patch, quick_axes

__all__ = [
    "HEAD_COLOURS", "HEAD_VIEW_NAMES", "head_view_data", "head_view_figure", "head_view_y_range",
    "attention_heatmap", "heatmap_axes", "model_view_figure", "head_stats_figure", "streamed_stats_figure", "bucket_labels", "mask_veil",
    "thumbnail_frame", "VEIL_SCALE", "attention_heatmap_spec", "model_view_spec", "model_view_select",
    "head_stats_spec", "streamed_stats_spec",
]

# 12 distinguishable colours (bertviz-like), cycled for more heads
HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a"]
VEIL_SCALE = [[0.0, "rgba(136,136,136,0)"], [1.0, "rgba(136,136,136,0.45)"]]  # masked cells: grey; others clear
LABELLED_TOKENS = 64  # above this many tokens, axes show positions instead of token text
# names of the head view's models that apps update in place (``BokehWidget.update``)
HEAD_VIEW_NAMES = {"tokens": "head-tokens", "lines": "head-lines", "y_range": "head-y-range"}
MAX_HEADS = 64  # heads the head view's colour map covers (colours cycle every 12)


def head_view_data(tokens: Sequence[str], pattern: np.ndarray, heads: Sequence[int], start: int = 0,
                   size: int = 48, threshold: float = 0.02) -> tuple[dict, dict]:
    """Column data for the head view: tokens on two columns, one line per (head, query, key) above ``threshold``.

    Args:
        tokens: all tokens of the input.
        pattern: (head, query, key) attention probabilities of one layer.
        heads: which heads to draw (0-based).
        start, size: the window of tokens shown (long inputs are windowed, not squeezed).
        threshold: lines with weight below it are left out (they would be invisible anyway).

    Returns:
        ``(token_columns, line_columns)`` for two ``ColumnDataSource`` objects. Numbers are numpy arrays (bokeh
        sends them as typed arrays: building the app's first head view at 32 tokens spent most of its 170 ms
        serialising 4000 lines as Python lists); a line is a segment from ``(x0, y0)`` (its query) to ``(x1, y1)``
        (its key), coloured by ``head``. Line alpha starts equal to the weight ``w``; the figure's click callback
        zeroes the lines of unselected tokens.
    """
    pattern = np.asarray(pattern)
    if pattern.ndim != 3 or pattern.shape[1] != len(tokens) or pattern.shape[2] != len(tokens):
        raise ValueError(f"pattern must have shape (head, {len(tokens)}, {len(tokens)}), got {pattern.shape}")
    n = len(tokens)
    start = int(min(max(start, 0), max(n - 1, 0)))
    stop = min(start + size, n)
    window = np.arange(start, stop)
    token_cols = {
        "x": np.repeat([0.0, 1.0], len(window)),
        "y": np.tile(-window.astype(np.float64), 2),
        "text": [tokens[i] for i in window] * 2,
        "side": ["query"] * len(window) + ["key"] * len(window),
        "index": np.tile(window.astype(np.int32), 2),
    }
    block = pattern[:, start:stop, start:stop]  # (head, query, key) inside the window
    heads = np.asarray(list(heads), dtype=np.int64)
    # head-major, then query, then key (the order of the loops it replaces)
    which, qi, ki = np.nonzero(block[heads] >= threshold)
    head = heads[which]
    w = block[head, qi, ki].astype(np.float64)
    query, key = (start + qi).astype(np.int32), (start + ki).astype(np.int32)
    line_cols = {"x0": np.full(len(w), 0.06), "y0": -query.astype(np.float64), "x1": np.full(len(w), 0.94),
                 "y1": -key.astype(np.float64), "w": w, "alpha": w.copy(), "query": query, "key": key,
                 "head": head.astype(np.int32)}
    return token_cols, line_cols


# Runs in the browser: clicking a token keeps only its lines; clicking empty space shows all again.
_ISOLATE_JS = """
const sel = tokens.selected.indices;
const d = lines.data;
const alpha = d.alpha;
if (sel.length === 0) {
    for (let i = 0; i < alpha.length; i++) alpha[i] = d.w[i];
} else {
    const idx = tokens.data.index[sel[0]];
    const col = tokens.data.side[sel[0]] === 'query' ? d.query : d.key;
    for (let i = 0; i < alpha.length; i++) alpha[i] = col[i] === idx ? d.w[i] : 0;
}
lines.change.emit();
"""


def head_view_figure(token_cols: dict, line_cols: dict, height: int | None = None):
    """Bokeh head view built from :func:`head_view_data`; returns ``(figure, token_source, line_source)``.

    Click a token (left: as query, right: as key) to isolate its lines; the toolbar's save button exports the
    view (PNG with the canvas backend, SVG when ``figure.output_backend = "svg"``).
    """
    from bokeh.models import ColumnDataSource, CustomJS, LinearColorMapper, Range1d, SaveTool, TapTool
    from bokeh.plotting import figure

    tokens = ColumnDataSource(token_cols, name=HEAD_VIEW_NAMES["tokens"])
    lines = ColumnDataSource(line_cols, name=HEAD_VIEW_NAMES["lines"])
    fig = figure(width=420, height=height or min(60 + 18 * max(len(token_cols["y"]) // 2, 1), 950),
                 tools=[SaveTool()], toolbar_location="above", x_range=Range1d(-0.55, 1.55),
                 y_range=Range1d(*head_view_y_range(token_cols), name=HEAD_VIEW_NAMES["y_range"]),
                 title="head view: click a token to isolate its attention", name="head-view",
                 x_axis_type=None, y_axis_type=None)  # no axes (nor their grids): fewer models to send and build
    fig.outline_line_color = None
    colours = LinearColorMapper(palette=[HEAD_COLOURS[h % len(HEAD_COLOURS)] for h in range(MAX_HEADS)],
                                low=-0.5, high=MAX_HEADS - 0.5)  # head h -> HEAD_COLOURS[h % 12], computed in the page
    fig.segment("x0", "y0", "x1", "y1", source=lines, line_color={"field": "head", "transform": colours},
                line_alpha="alpha", line_width=2)
    boxes = fig.rect("x", "y", width=0.5, height=0.9, source=tokens, fill_color="#ffd54f", fill_alpha=0.0,
                     line_alpha=0.0, selection_fill_alpha=0.35, nonselection_fill_alpha=0.0)
    fig.text(x=-0.02, y="y", text="text", source=tokens, text_align="right", text_baseline="middle",
             text_font_size="10pt", view=_side_view(tokens, "query"))
    fig.text(x=1.02, y="y", text="text", source=tokens, text_align="left", text_baseline="middle",
             text_font_size="10pt", view=_side_view(tokens, "key"))
    fig.add_tools(TapTool(renderers=[boxes]))
    tokens.selected.js_on_change("indices", CustomJS(args={"tokens": tokens, "lines": lines}, code=_ISOLATE_JS))
    return fig, tokens, lines


def head_view_y_range(token_cols: dict) -> tuple[float, float]:
    """(start, end) of the head view's y axis: one row per token of the window, the first at the top."""
    rows = max(len(token_cols["y"]) // 2, 1)
    top = float(token_cols["y"][0]) if len(token_cols["y"]) else 0.0
    return top - rows + 0.5, top + 0.5


def _side_view(source, side: str):
    from bokeh.models import CDSView, GroupFilter

    return CDSView(filter=GroupFilter(column_name="side", group=side))


def heatmap_axes(tokens: Sequence[str], factor: int = 1) -> dict:
    """Tick values/labels: token text for short inputs, positions otherwise (axes of duplicate tokens stay apart)."""
    n = len(tokens)
    if factor == 1 and n <= LABELLED_TOKENS:
        return {"tickmode": "array", "tickvals": list(range(n)), "ticktext": [html.escape(t) for t in tokens]}
    return {"tickmode": "auto", "tickvals": None, "ticktext": None}


def attention_heatmap(pattern: np.ndarray, tokens: Sequence[str], blocked: np.ndarray | None = None,
                      title: str = "", factor: int = 1) -> go.Figure:
    """Query x key heatmap of one attention pattern with the mask overlaid.

    Args:
        pattern: (query, key) weights (possibly block-aggregated, see ``factor``).
        tokens: the input tokens (for tick labels when short).
        blocked: (query, key) bool, True where the mask forbids attention; drawn as a grey veil.
        factor: aggregation factor the pattern was downsampled by (1 = one cell per token pair).

    Returns:
        Figure with trace 0 = weights, trace 1 = mask veil.
    """
    pattern = np.asarray(pattern, dtype=np.float32)
    if pattern.ndim != 2:
        raise ValueError(f"pattern must be 2-D (query, key), got shape {pattern.shape}")
    veil = mask_veil(blocked, pattern.shape)
    fig = go.Figure([
        go.Heatmap(z=pattern, colorscale="Blues", zmin=0, colorbar={"title": "weight", "thickness": 12},
                   hovertemplate="query %{y} → key %{x}<br>weight %{z:.3f}<extra></extra>", name="attention"),
        go.Heatmap(z=veil, colorscale=VEIL_SCALE, zmin=0, zmax=1, showscale=False, hoverinfo="skip", name="masked"),
    ])
    axes = heatmap_axes(tokens, factor)
    fig.update_layout(title={"text": title, "font": {"size": 13}}, height=520,
                      margin={"l": 80, "r": 10, "t": 50, "b": 80}, uirevision="heatmap")
    fig.update_xaxes(title="key", tickangle=-60, **axes, constrain="domain")
    fig.update_yaxes(title="query", autorange="reversed", scaleanchor="x", **axes, constrain="domain")
    return quick_axes(fig)


def mask_veil(blocked: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The grey overlay of masked cells: 1 where ``blocked``, 0 (transparent in :data:`VEIL_SCALE`) elsewhere.

    Not NaN for "transparent": NaN is not JSON, and a plotly figure holding it in a list (rather than a numpy
    array) falls back to a deprecated non-compliant serialisation (a warning on the notebook's stderr).
    """
    if blocked is None:
        return np.zeros(shape, dtype=np.float32)
    blocked = np.asarray(blocked, dtype=bool)
    if blocked.shape != shape:
        raise ValueError(f"blocked must have the pattern's shape {shape}, got {blocked.shape}")
    return blocked.astype(np.float32)


def model_view_figure(thumbs: np.ndarray, selected: tuple[int, int] = (0, 0)) -> go.Figure:
    """Grid of layers x heads thumbnails; trace ``layer * heads + head``; shape 0 frames the selected one.

    Args:
        thumbs: (layer, head, query, key) patterns, already downsampled to thumbnail size.
        selected: (layer, head) to frame.
    """
    thumbs = np.asarray(thumbs, dtype=np.float32)
    if thumbs.ndim != 4:
        raise ValueError(f"thumbs must be (layer, head, query, key), got shape {thumbs.shape}")
    layers, heads = thumbs.shape[:2]
    fig = make_subplots(rows=layers, cols=heads, horizontal_spacing=0.006, vertical_spacing=0.012,
                        row_titles=[f"L{l + 1}" for l in range(layers)],
                        column_titles=[f"H{h + 1}" for h in range(heads)])
    for l in range(layers):
        for h in range(heads):
            fig.add_trace(go.Heatmap(z=thumbs[l, h], colorscale="Blues", showscale=False, zmin=0,
                                     hovertemplate=f"layer {l + 1}, head {h + 1}<extra></extra>"),
                          row=l + 1, col=h + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.add_shape(type="rect", line={"color": "#e4572e", "width": 3}, **thumbnail_frame(selected, heads))
    # the title sits above the column titles (H1, H2, ...), which plotly puts just above the top row
    fig.update_layout(height=80 + 62 * layers, margin={"l": 10, "r": 30, "t": 64, "b": 10},
                      title={"text": "model view: every layer × head (click one to open it)", "font": {"size": 13},
                             "y": 1, "yref": "container", "yanchor": "top", "pad": {"t": 8}},
                      uirevision="model-view")
    return quick_axes(fig)


def thumbnail_frame(selected: tuple[int, int], heads: int) -> dict:
    """Coordinates of the rectangle around the (layer, head) thumbnail ``selected`` in the model view."""
    index = selected[0] * heads + selected[1] + 1
    suffix = "" if index == 1 else str(index)
    return {"xref": f"x{suffix} domain", "yref": f"y{suffix} domain", "x0": -0.04, "x1": 1.04, "y0": -0.04,
            "y1": 1.04}


def head_stats_figure(entropy: np.ndarray, distance: np.ndarray, sink: np.ndarray, selected: int = 0) -> go.Figure:
    """Per-head bars for one layer: entropy (nats), mean attention distance (tokens), share on [CLS]/[SEP].

    Trace order: entropy, distance, sink; the selected head's bar is highlighted.
    """
    heads = np.arange(1, len(entropy) + 1)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("entropy (nats): low = focused", "mean attention distance (tokens)",
                                        "share on [CLS]/[SEP] (sink)"))
    for row, values in enumerate((entropy, distance, sink), start=1):
        fig.add_trace(go.Bar(x=heads, y=np.asarray(values, dtype=float), marker_color=bar_colours(len(heads), selected),
                             hovertemplate="head %{x}: %{y:.3f}<extra></extra>"), row=row, col=1)
    fig.update_layout(height=520, showlegend=False, margin={"l": 40, "r": 10, "t": 40, "b": 40},
                      uirevision="stats")
    fig.update_xaxes(title="head", row=3, col=1, dtick=1)
    return quick_axes(fig)


def bucket_labels(buckets: Sequence[tuple[int, int | None]]) -> list[str]:
    """Axis labels for distance buckets ``[(lo, hi_exclusive or None)]``: "0", "1", "2–3", ..., "≥ 16384"."""
    return [f"≥ {lo}" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}–{hi - 1}") for lo, hi in buckets]


def streamed_stats_figure(entropy: np.ndarray, distance: np.ndarray, histogram: np.ndarray,
                          buckets: Sequence[tuple[int, int | None]], title: str = "", selected: int = -1) -> go.Figure:
    """Per-head statistics computed without the n x n matrix (streamed): entropy, mean distance, distance histogram.

    Args:
        entropy, distance: ``[head]``, means over queries (nats, tokens).
        histogram: ``[head, bucket]`` share of each head's attention per (log-spaced) distance bucket.
        buckets: ``[(lo, hi_exclusive or None)]`` from :func:`explorer.kernels.distance_buckets`.
        title: figure title.
        selected: head to highlight in the bars (-1: none).

    Trace order: entropy bars, distance bars, histogram heatmap.
    """
    histogram = np.asarray(histogram, dtype=float)
    heads = np.arange(1, histogram.shape[0] + 1)
    fig = make_subplots(rows=1, cols=3, column_widths=[0.22, 0.22, 0.56], horizontal_spacing=0.07,
                        subplot_titles=("entropy (nats)", "mean distance (tokens)", "share of attention by distance"))
    colours = bar_colours(len(heads), selected)
    for col, values in enumerate((entropy, distance), start=1):
        fig.add_trace(go.Bar(y=heads, x=np.asarray(values, dtype=float), orientation="h", marker_color=colours,
                             hovertemplate="head %{y}: %{x:.3f}<extra></extra>"), row=1, col=col)
    fig.add_trace(go.Heatmap(z=histogram, x=bucket_labels(buckets)[: histogram.shape[1]], y=heads,
                             colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "share", "len": 0.9},
                             hovertemplate="head %{y}, distance %{x}: %{z:.3f}<extra></extra>"), row=1, col=3)
    fig.update_yaxes(autorange="reversed", dtick=1, title="head", row=1, col=1)
    fig.update_yaxes(autorange="reversed", dtick=1, row=1, col=2)
    fig.update_yaxes(autorange="reversed", dtick=1, row=1, col=3)
    fig.update_xaxes(type="category", title="query–key distance (tokens)", row=1, col=3)
    # the title sits above the three panel titles
    fig.update_layout(title={"text": title, "font": {"size": 13}, "y": 1, "yref": "container", "yanchor": "top",
                             "pad": {"t": 8}}, height=380, showlegend=False,
                      margin={"l": 50, "r": 10, "t": 80, "b": 50}, uirevision="streamed")
    return quick_axes(fig)


def bar_colours(n: int, selected: int) -> list[str]:
    return ["#e4572e" if i == selected else "#4c78a8" for i in range(n)]


# --- spec forms (see explorer.viz._spec): the validated builders above build a skeleton once; controls patch it ---
_SKELETONS: defaultdict[str, SkeletonCache] = defaultdict(SkeletonCache)


def _skeletons(name: str):

    return _SKELETONS[name]


def attention_heatmap_spec(pattern: np.ndarray, tokens: Sequence[str], blocked: np.ndarray | None = None,
                           title: str = "", factor: int = 1) -> dict:
    """:func:`attention_heatmap` as a spec: built (validated) once per size and tick labels, then only the weights,
    veil and title change."""
    pattern = np.asarray(pattern, dtype=np.float32)
    if pattern.ndim != 2:
        raise ValueError(f"pattern must be 2-D (query, key), got shape {pattern.shape}")
    veil = mask_veil(blocked, pattern.shape)
    labelled = factor == 1 and len(tokens) <= LABELLED_TOKENS
    key = (pattern.shape, len(tokens), factor, tuple(tokens) if labelled else None)
    skeleton, fresh = _skeletons("heatmap").get(key, lambda: attention_heatmap(pattern, tokens, blocked, title, factor))
    if fresh:
        return skeleton
    return patch(skeleton, data={0: {"z": pattern}, 1: {"z": veil}}, layout={"title": {"text": title}})


def model_view_spec(thumbs: np.ndarray, selected: tuple[int, int] = (0, 0)) -> dict:
    """:func:`model_view_figure` as a spec: the grid is built (validated) once per thumbnail shape; another input
    replaces the thumbnails. Move the frame of a spec with :func:`model_view_select`."""
    thumbs = np.asarray(thumbs, dtype=np.float32)
    if thumbs.ndim != 4:
        raise ValueError(f"thumbs must be (layer, head, query, key), got shape {thumbs.shape}")
    skeleton, fresh = _skeletons("model-view").get(thumbs.shape, lambda: model_view_figure(thumbs, selected))
    if fresh:
        return skeleton
    heads = thumbs.shape[1]
    spec = patch(skeleton, data={l * heads + h: {"z": thumbs[l, h]} for l in range(thumbs.shape[0])
                                 for h in range(heads)})
    return model_view_select(spec, selected, heads)


def model_view_select(spec: dict, selected: tuple[int, int], heads: int) -> dict:
    """The model-view spec (``heads`` columns) with its frame around ``selected``; the thumbnails are shared."""
    return patch(spec, layout={"shapes": {0: thumbnail_frame(selected, heads)}})


def head_stats_spec(entropy: np.ndarray, distance: np.ndarray, sink: np.ndarray, selected: int = 0) -> dict:
    """:func:`head_stats_figure` as a spec: built (validated) once per head count, then bars and colours change."""
    n = len(entropy)
    skeleton, fresh = _skeletons("stats").get(n, lambda: head_stats_figure(entropy, distance, sink, selected))
    if fresh:
        return skeleton
    colours = bar_colours(n, selected)
    return patch(skeleton, data={i: {"y": np.asarray(values, dtype=float), "marker": {"color": colours}}
                                 for i, values in enumerate((entropy, distance, sink))})


def streamed_stats_spec(entropy: np.ndarray, distance: np.ndarray, histogram: np.ndarray,
                        buckets: Sequence[tuple[int, int | None]], title: str = "", selected: int = -1) -> dict:
    """:func:`streamed_stats_figure` as a spec: built (validated) once per shape, then values and title change."""
    histogram = np.asarray(histogram, dtype=float)
    key = (histogram.shape, tuple(buckets))
    skeleton, fresh = _skeletons("streamed").get(
        key, lambda: streamed_stats_figure(entropy, distance, histogram, buckets, title, selected))
    if fresh:
        return skeleton
    colours = bar_colours(histogram.shape[0], selected)
    return patch(skeleton, data={0: {"x": np.asarray(entropy, dtype=float), "marker": {"color": colours}},
                                 1: {"x": np.asarray(distance, dtype=float), "marker": {"color": colours}},
                                 2: {"z": histogram}},
                 layout={"title": {"text": title}})
