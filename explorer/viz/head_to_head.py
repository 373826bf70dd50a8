"""Head-to-head figures: a digit with what a classifier looks at, its class probabilities, and the five models'
learning curves and shift sensitivity (arrays and result rows in, plotly figures out)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.viz._spec import SkeletonCache, patch, quick_axes
from explorer.viz.cross_modal import OVERLAY_SCALE, normalise

__all__ = ["digit_figure", "probability_figure", "learning_curves_figure", "shift_flips_figure", "flip_rows",
           "looks_at_grid", "MODEL_COLOURS", "INK_SCALE", "digit_spec", "probability_spec"]

# one colour per shipped model, the same in every figure (CNNs blue/purple, ViTs red/orange, the hybrid green)
MODEL_COLOURS = {"cnn": "#1f77b4", "se_cnn": "#9467bd", "vit": "#d62728", "vit_nopos": "#ff7f0e",
                 "hybrid": "#2ca02c"}
INK_SCALE = [[0.0, "#ffffff"], [1.0, "#000000"]]  # pixel 0 = paper (white), 1 = ink (black)
_OTHER = "#7f7f7f"


def digit_figure(image: np.ndarray, overlay: np.ndarray, title: str = "") -> go.Figure:
    """The input digit in grey with a map over it (transparent to red, normalised to the map's own maximum).

    Args:
        image: (height, width) pixels in [0, 1], as the model sees them (shifted if it was).
        overlay: (height, width) nonnegative map of the same shape (attribution, gradient, attention).
        title: figure title.

    Returns:
        Figure with trace 0 = the image (``z`` = the pixels), trace 1 = the overlay (``z`` = ``normalise(overlay)``).
    """
    image, overlay = np.asarray(image, dtype=np.float32), np.asarray(overlay, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must have shape (height, width), got {image.shape}")
    if overlay.shape != image.shape:
        raise ValueError(f"overlay must have the image's shape {image.shape}, got {overlay.shape}")
    fig = go.Figure([
        go.Heatmap(z=image, colorscale=INK_SCALE, zmin=0, zmax=1, showscale=False,
                   hovertemplate="row %{y}, col %{x}: pixel %{z:.2f}<extra></extra>"),
        go.Heatmap(z=normalise(np.abs(overlay)), colorscale=OVERLAY_SCALE, zmin=0, zmax=1, showscale=False,
                   hovertemplate="row %{y}, col %{x}: %{z:.2f} of max<extra></extra>"),
    ])
    height, width = image.shape
    fig.add_shape(type="rect", x0=-0.5, x1=width - 0.5, y0=-0.5, y1=height - 0.5,  # the canvas's edge
                  line={"color": "#999", "width": 1})
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain", scaleanchor="x")
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 46, "b": 10}, showlegend=False,
                      title={"text": title, "font": {"size": 13}, "x": 0.5, "xanchor": "center"},
                      uirevision="h2h-digit", plot_bgcolor="white")
    return quick_axes(fig)


def probability_figure(probs: np.ndarray, predicted: int, target: int | None = None) -> go.Figure:
    """Bars of the ten class probabilities; the predicted class coloured, the true class outlined.

    Args:
        probs: (classes,) softmax probabilities.
        predicted: the predicted class (its bar is coloured).
        target: the true class (its bar gets a black outline), or None.

    Returns:
        Figure with trace 0 = the bars (``x`` = classes 0 .., ``y`` = ``probs``).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1 or probs.size == 0:
        raise ValueError(f"probs must have shape (classes,), got {probs.shape}")
    classes = np.arange(probs.size)
    colours = ["#e4572e" if c == predicted else "#9ecae1" for c in classes]
    lines = [2.5 if c == target else 0 for c in classes]
    fig = go.Figure(go.Bar(x=classes, y=probs, marker={"color": colours, "line": {"color": "#000", "width": lines}},
                           hovertemplate="class %{x}: p = %{y:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="class (outlined: true label)", tickmode="linear", dtick=1, fixedrange=True)
    fig.update_yaxes(title_text="probability", range=[0, 1.02], fixedrange=True)
    fig.update_layout(height=250, margin={"l": 50, "r": 10, "t": 30, "b": 40}, showlegend=False,
                      title={"text": "class probabilities", "font": {"size": 13}}, uirevision="h2h-probs")
    return quick_axes(fig)


def learning_curves_figure(curves: Mapping[str, Sequence[Mapping]], labels: Mapping[str, str],
                           selected: str | None = None, empty: str = "no learning curves") -> go.Figure:
    """Test accuracy against training-set size, one line per model: mean over seeds with its 95 % interval.

    Args:
        curves: model -> points ``{"size", "mean", "ci95": [lo, hi], ...}`` (``data_efficiency.json``'s ``curves``).
        labels: model -> legend name.
        selected: the model shown above (drawn thicker), or None.
        empty: what the figure says when ``curves`` is empty (plotly's ``<br>`` breaks lines).

    Returns:
        Figure with one trace per model in ``curves``' order, named by ``labels`` (``x`` = sizes, ``y`` = means,
        ``error_y`` up/down to the interval), a log x axis. With no curves: no axes, and ``empty`` as its only
        annotation.
    """
    fig = go.Figure()
    for model, points in curves.items():
        points = sorted(points, key=lambda p: p["size"])
        sizes = np.array([p["size"] for p in points], dtype=np.float64)
        means = np.array([p["mean"] for p in points], dtype=np.float64)
        lo = np.array([p["ci95"][0] for p in points], dtype=np.float64)
        hi = np.array([p["ci95"][1] for p in points], dtype=np.float64)
        width = 3.5 if model == selected else 1.5
        fig.add_trace(go.Scatter(
            x=sizes, y=means, mode="lines+markers", name=labels.get(model, model),
            line={"color": MODEL_COLOURS.get(model, _OTHER), "width": width},
            marker={"size": 9 if model == selected else 6},
            error_y={"type": "data", "symmetric": False, "array": hi - means, "arrayminus": means - lo,
                     "thickness": 1.2, "width": 3},
            hovertemplate=f"{labels.get(model, model)}<br>%{{x:d}} training images: %{{y:.1%}}<extra></extra>"))
    fig.update_xaxes(type="log", title_text="training images (log scale)")
    fig.update_yaxes(title_text="test accuracy", tickformat=".0%")
    fig.update_layout(height=340, margin={"l": 60, "r": 10, "t": 40, "b": 45}, uirevision="h2h-curves",
                      title={"text": "learning curves (mean of seeds, 95 % interval)", "font": {"size": 13}},
                      legend={"orientation": "h", "y": -0.25, "font": {"size": 11}})
    if not curves:
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        fig.add_annotation(text=empty, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return quick_axes(fig)


def flip_rows(rows: Sequence[Mapping], mode: str = "circular") -> dict[str, list[Mapping]]:
    """The rows of ``equivariance.json``'s ``aggregates.equivariance`` for horizontal shifts in ``mode``,
    grouped by model (first-seen order) and sorted by shift."""
    grouped: dict[str, list[Mapping]] = {}
    for r in rows:
        if r["mode"] == mode and r["shift"][0] == 0 and r["shift"][1] > 0:
            grouped.setdefault(r["model"], []).append(r)
    return {m: sorted(rs, key=lambda r: r["shift"][1]) for m, rs in grouped.items()}


def shift_flips_figure(rows: Mapping[str, Sequence[Mapping]], labels: Mapping[str, str],
                       selected: str | None = None, shift: int = 0) -> go.Figure:
    """Share of test predictions that change when the digit moves right by 1-4 pixels, per model.

    Args:
        rows: model -> rows ``{"shift": [0, dx], "aligned", "prediction_flips": {"mean", "std"}, ...}``
            (from :func:`flip_rows`).
        labels: model -> legend name.
        selected: the model shown above (drawn thicker), or None.
        shift: the shift shown above; its size is marked by a dotted vertical line (none for 0).

    Returns:
        Figure with one trace per model in ``rows``' order (``x`` = dx, ``y`` = mean flips, ``error_y`` = std over
        seeds); shifts that are a multiple of the model's feature stride (``aligned``) are drawn as diamonds.
    """
    fig = go.Figure()
    for model, rs in rows.items():
        x = np.array([r["shift"][1] for r in rs], dtype=np.float64)
        y = np.array([r["prediction_flips"]["mean"] for r in rs], dtype=np.float64)
        std = np.array([r["prediction_flips"]["std"] for r in rs], dtype=np.float64)
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=labels.get(model, model),
            line={"color": MODEL_COLOURS.get(model, _OTHER), "width": 3.5 if model == selected else 1.5},
            marker={"symbol": ["diamond" if r["aligned"] else "circle" for r in rs],
                    "size": 10 if model == selected else 7},
            error_y={"type": "data", "array": std, "thickness": 1.2, "width": 3},
            hovertemplate=f"{labels.get(model, model)}<br>shift %{{x}} px: %{{y:.1%}} flipped<extra></extra>"))
    if shift:
        fig.add_vline(x=abs(shift), line={"dash": "dot", "color": "#555", "width": 1})
    fig.update_xaxes(title_text="horizontal shift, pixels (circular; ◆ = multiple of the feature stride)",
                     tickmode="linear", dtick=1, range=[0.5, 4.5])
    fig.update_yaxes(title_text="predictions changed", tickformat=".0%", rangemode="tozero")
    fig.update_layout(height=340, margin={"l": 60, "r": 10, "t": 40, "b": 45}, uirevision="h2h-flips",
                      title={"text": "prediction flips under shift (mean ± std of seeds)", "font": {"size": 13}},
                      legend={"orientation": "h", "y": -0.25, "font": {"size": 11}})
    return quick_axes(fig)


def looks_at_grid(vit: object, cnn: object, image: np.ndarray) -> go.Figure:
    """Lesson 05's grid of what a ViT and a CNN look at on one digit.

    14 panels, filled row by row: the ViT's ``[CLS]`` attention of each of its 4 heads in its first block, its
    rollout; each head in its last block, the digit; the ViT's logit gradient and IG, the CNN's logit gradient and
    IG. Each panel is scaled to its own maximum (plotly's default per trace).

    Args:
        vit: :class:`~explorer.analysis.looks_at.LooksAt` of an attention model (``attention`` ``[layer, head, H, W]``).
        cnn: :class:`~explorer.analysis.looks_at.LooksAt` of a convolutional model.
        image: the digit, ``(height, width)`` or ``(1, height, width)``.

    Returns:
        Figure with one heatmap per panel in the order above; panel titles are the subplot annotations.
    """
    from plotly.subplots import make_subplots

    if getattr(vit, "attention", None) is None or getattr(vit, "kind", None) != "attention":
        raise ValueError("vit must be the LooksAt of an attention model (it has per-head attention maps)")
    if getattr(cnn, "kind", None) != "convolution":
        raise ValueError("cnn must be the LooksAt of a convolutional model")
    image = np.asarray(image, dtype=np.float32)
    image = image[0] if image.ndim == 3 and image.shape[0] == 1 else image
    if image.shape != tuple(vit.gradient.shape):
        raise ValueError(f"image must have the maps' shape {tuple(vit.gradient.shape)}, got {image.shape}")
    attention = vit.attention.numpy()
    heads = attention.shape[1]
    if heads != 4:
        raise ValueError(f"the grid has 4 columns of heads; this ViT has {heads} heads")
    last = attention.shape[0]
    panels = [(f"ViT layer 1, head {h + 1}", attention[0, h]) for h in range(heads)]
    panels.append(("ViT rollout", vit.rollout.numpy()))
    panels += [(f"ViT layer {last}, head {h + 1}", attention[-1, h]) for h in range(heads)]
    panels += [("the digit", image), ("ViT gradient", vit.gradient.numpy()), ("ViT IG", vit.ig.numpy()),
               ("CNN gradient", cnn.gradient.numpy()), ("CNN IG", cnn.ig.numpy())]
    fig = make_subplots(rows=3, cols=5, subplot_titles=[title for title, _ in panels], horizontal_spacing=0.03,
                        vertical_spacing=0.07)
    for i, (title, z) in enumerate(panels):
        fig.add_trace(go.Heatmap(z=z, colorscale="Greys" if title == "the digit" else "Reds", showscale=False,
                                 hovertemplate=f"{title}<br>row %{{y}}, col %{{x}}: %{{z:.3f}}<extra></extra>"),
                      row=i // 5 + 1, col=i % 5 + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_annotations(font_size=12)
    fig.update_layout(height=640, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return quick_axes(fig)


# --- spec forms (see explorer.viz._spec): built, with validation, once; a control then patches values ---------
_SKELETONS: defaultdict[str, SkeletonCache] = defaultdict(SkeletonCache)


def _skeleton(name: str, key, build):

    return _SKELETONS[name].get(key, build)


def digit_spec(image: np.ndarray, overlay: np.ndarray, title: str = "") -> dict:
    """:func:`digit_figure` as a spec: built (validated) once per image size; then pixels, overlay and title."""
    image, overlay = np.asarray(image, dtype=np.float32), np.asarray(overlay, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must have shape (height, width), got {image.shape}")
    if overlay.shape != image.shape:
        raise ValueError(f"overlay must have the image's shape {image.shape}, got {overlay.shape}")
    skeleton, fresh = _skeleton("digit", image.shape, lambda: digit_figure(image, overlay, title))
    if fresh:
        return skeleton
    return patch(skeleton, data={0: {"z": image}, 1: {"z": normalise(np.abs(overlay))}},
                 layout={"title": {"text": title}})


def probability_spec(probs: np.ndarray, predicted: int, target: int | None = None) -> dict:
    """:func:`probability_figure` as a spec: built (validated) once per class count; then bars and colours."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1 or probs.size == 0:
        raise ValueError(f"probs must have shape (classes,), got {probs.shape}")
    skeleton, fresh = _skeleton("probs", probs.size, lambda: probability_figure(probs, predicted, target))
    if fresh:
        return skeleton
    classes = range(probs.size)
    colours = ["#e4572e" if c == predicted else "#9ecae1" for c in classes]
    lines = [2.5 if c == target else 0 for c in classes]
    return patch(skeleton, data={0: {"y": probs, "marker": {"color": colours, "line": {"width": lines}}}})
