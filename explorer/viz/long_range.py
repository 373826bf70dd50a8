"""Long-range figures: accuracy against the distance between two tokens with each CNN's receptive field on the
same axis, the attention model's attention distance, and one sequence with what each model can see of it
(result rows and arrays in, plotly figures out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz._spec import SkeletonCache, patch, quick_axes

__all__ = ["accuracy_distance_figure", "curves_at_distance", "sequence_figure", "sequence_spec", "MODEL_COLOURS",
           "field_window"]

# CNNs blue / purple, attention red: as in the head-to-head figures
MODEL_COLOURS = {"cnn": "#1f77b4", "dilated_cnn": "#9467bd", "attention": "#d62728"}
_OTHER = "#7f7f7f"


def _colour(model: str) -> str:
    return MODEL_COLOURS.get(model, _OTHER)


def accuracy_distance_figure(curves: Mapping[str, Mapping[str, Mapping]], fields: Mapping[str, int | None],
                             labels: Mapping[str, str], attention: Mapping[str, Mapping] | None = None,
                             distance: int | None = None) -> go.Figure:
    """Test accuracy against the distance ``d`` between the two marked tokens, one line per model (mean over seeds
    with its 95 % interval), each CNN's receptive field as a dashed vertical line of its colour, chance at 50 %;
    below it, the attention model's mean attention distance from the later marked token, per layer.

    Args:
        curves: model -> ``{str(d): {"mean", "ci95": [lo, hi], ...}}`` (``long_range.json``'s
            ``summary[model]["accuracy"]``).
        fields: model -> receptive field in positions (None: the whole sequence, no line).
        labels: model -> legend name.
        attention: ``{str(d): {"later_token": [per layer: {"mean", "ci95"}]}}`` (``summary["attention"]
            ["attention"]``), or None for no lower panel.
        distance: the distance shown in the app (a grey vertical line in both panels), or None.

    Returns:
        Figure: first the accuracy traces (one per model of ``curves``, ``x`` = distances, ``y`` = means), then one
        attention-distance trace per layer (``y`` = mean distance in positions), then the ``y = d`` reference.
        Field lines are layout shapes named ``field <model>``; the shown distance is the shape ``distance``.
    """
    rows = 2 if attention else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        row_heights=[0.62, 0.38] if rows == 2 else [1.0])
    for model, curve in curves.items():
        ds = sorted(int(d) for d in curve)
        means = np.array([curve[str(d)]["mean"] for d in ds], dtype=np.float64)
        lo = np.array([curve[str(d)]["ci95"][0] for d in ds], dtype=np.float64)
        hi = np.array([curve[str(d)]["ci95"][1] for d in ds], dtype=np.float64)
        name = labels.get(model, model)
        fig.add_trace(go.Scatter(
            x=ds, y=means, mode="lines+markers", name=name, legendgroup=model,
            line={"color": _colour(model), "width": 2}, marker={"size": 6},
            error_y={"type": "data", "symmetric": False, "array": hi - means, "arrayminus": means - lo,
                     "thickness": 1.2, "width": 3},
            hovertemplate=f"{name}<br>d = %{{x:d}}: %{{y:.1%}}<extra></extra>"), row=1, col=1)
    for model, field in fields.items():
        if field is None or model not in curves:
            continue
        fig.add_vline(x=field, line={"color": _colour(model), "dash": "dash", "width": 1.5}, row=1, col=1,
                      name=f"field {model}")
        fig.add_annotation(x=np.log10(field), y=1.02, xref="x", yref="y", text=f"field {field}", showarrow=False,
                           font={"size": 11, "color": _colour(model)}, yanchor="bottom")
    fig.add_hline(y=0.5, line={"color": "#999", "dash": "dot", "width": 1}, row=1, col=1)
    if attention:
        ds = sorted(int(d) for d in attention)
        layers = len(attention[str(ds[0])]["later_token"])
        for layer in range(layers):
            means = [attention[str(d)]["later_token"][layer]["mean"] for d in ds]
            fig.add_trace(go.Scatter(
                x=ds, y=means, mode="lines+markers", name=f"attention distance, layer {layer + 1}",
                legendgroup="attention-distance", showlegend=True,
                line={"color": _colour("attention"), "width": 1.5, "dash": ["solid", "dot", "dashdot"][layer % 3]},
                marker={"size": 5},
                hovertemplate=f"layer {layer + 1}<br>d = %{{x:d}}: %{{y:.1f}} positions<extra></extra>"), row=2, col=1)
        fig.add_trace(go.Scatter(x=ds, y=ds, mode="lines", name="d (the partner's distance)",
                                 line={"color": "#999", "dash": "dot", "width": 1}, hoverinfo="skip"), row=2, col=1)
        fig.update_yaxes(type="log", title_text="positions", row=2, col=1)
    if distance is not None:
        for r in range(1, rows + 1):
            fig.add_vline(x=distance, line={"color": "#444", "width": 1}, row=r, col=1, name="distance")
    fig.update_xaxes(type="log", row=rows, col=1, title_text="distance d between the marked tokens (log scale)")
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_yaxes(title_text="test accuracy", tickformat=".0%", range=[0.35, 1.05], row=1, col=1)
    fig.update_layout(height=560 if rows == 2 else 360, margin={"l": 60, "r": 10, "t": 40, "b": 45},
                      uirevision="long-range-curves",
                      title={"text": "accuracy vs distance (mean of seeds, 95 % interval) and receptive fields",
                             "font": {"size": 13}},
                      legend={"orientation": "h", "y": -0.16, "font": {"size": 11}})
    return quick_axes(fig)


def field_window(field: int, first: int, second: int, length: int) -> tuple[int, int]:
    """The ``field`` positions (odd, centred) one CNN output sees, centred between the two marked tokens and clipped
    to the sequence: ``(start, end)`` inclusive. The CNN can compare the two tokens iff this window holds both,
    i.e. iff ``second - first <= field - 1``."""
    half = (field - 1) // 2
    centre = (first + second) // 2
    return max(0, centre - half), min(length - 1, centre + half)


def sequence_figure(tokens: np.ndarray, first: int, second: int, names: Sequence[str],
                    fields: Mapping[str, int], labels: Mapping[str, str], attention_row: np.ndarray | None,
                    title: str = "") -> go.Figure:
    """One sequence: where the two marked tokens are, the window each CNN output centred between them sees, and the
    attention the later marked token pays to every position.

    Args:
        tokens: ``(length,)`` token ids (fillers, then the two marked ones).
        first, second: positions of the earlier and the later marked token.
        names: the names of the two marked tokens in order of position (e.g. ``("A", "B")``).
        fields: CNN model -> receptive field in positions.
        labels: model -> legend name.
        attention_row: ``(length,)`` attention of the later marked token (heads averaged), or None.
        title: figure title.

    Returns:
        Figure: trace 0 = the attention row (``y``, or empty), then one trace per CNN field window (a filled band),
        then the two marked tokens (trace name ``marked``).
    """
    tokens = np.asarray(tokens)
    length = int(tokens.shape[0])
    positions = np.arange(length)
    fig = go.Figure()
    if attention_row is not None:
        attention_row = np.asarray(attention_row, dtype=np.float64)
        fig.add_trace(go.Bar(x=positions, y=attention_row, name=labels.get("attention", "attention") +
                             ": attention from the later token", marker={"color": _colour("attention")},
                             hovertemplate="position %{x}: %{y:.3f}<extra></extra>"))
    else:
        fig.add_trace(go.Bar(x=[], y=[], name="attention", showlegend=False))
    top = 1.0 if attention_row is None else max(float(attention_row.max()), 1e-3) * 1.15
    for i, (model, field) in enumerate(fields.items()):
        start, end = field_window(field, first, second, length)
        low, high = -0.08 * top * (i + 1), -0.08 * top * i - 0.01 * top
        fig.add_trace(go.Scatter(x=[start - 0.5, end + 0.5, end + 0.5, start - 0.5, start - 0.5],
                                 y=[low, low, high, high, low], fill="toself", mode="lines",
                                 line={"color": _colour(model), "width": 1}, opacity=0.6,
                                 name=f"{labels.get(model, model)}: one output sees {start}..{end}",
                                 hoverinfo="name"))
    fig.add_trace(go.Scatter(x=[first, second], y=[top, top], mode="markers+text", text=list(names),
                             textposition="top center", marker={"symbol": "triangle-down", "size": 12,
                                                                "color": "#000"},
                             name="marked", showlegend=False, hovertemplate="%{text} at %{x}<extra></extra>"))
    for x in (first, second):
        fig.add_vline(x=x, line={"color": "#000", "width": 1, "dash": "dot"})
    fig.update_xaxes(range=[-1, length], title_text="position")
    fig.update_yaxes(title_text="attention weight", range=[-0.08 * top * (len(fields) + 0.3), top * 1.18])
    fig.update_layout(height=330, margin={"l": 60, "r": 10, "t": 40, "b": 45}, bargap=0,
                      title={"text": title, "font": {"size": 13}},
                      legend={"orientation": "h", "y": -0.3, "font": {"size": 11}})
    return quick_axes(fig)


def curves_at_distance(spec: dict, distance: int) -> dict:
    """A spec of :func:`accuracy_distance_figure` (built with some ``distance``, see :mod:`explorer.viz._spec`)
    with its shown-distance lines (shapes named ``distance``) moved to ``distance``; everything else is shared."""
    moved = {i: {"x0": distance, "x1": distance} for i, shape in enumerate(spec["layout"].get("shapes", ()))
             if shape.get("name") == "distance"}
    return patch(spec, layout={"shapes": moved} if moved else None)


_SKELETONS = SkeletonCache()


def sequence_spec(tokens: np.ndarray, first: int, second: int, names: Sequence[str],
                  fields: Mapping[str, int], labels: Mapping[str, str], attention_row: np.ndarray | None,
                  title: str = "") -> dict:
    """:func:`sequence_figure` as a spec (see :mod:`explorer.viz._spec`): built, with validation, once per sequence
    length and models; another example or distance changes only the bars, windows, marks and ranges."""
    tokens = np.asarray(tokens)
    length = int(tokens.shape[0])
    key = (length, tuple(fields.items()), tuple(labels.items()), attention_row is None)
    skeleton, fresh = _SKELETONS.get(key, lambda: sequence_figure(tokens, first, second, names, fields, labels,
                                                                  attention_row, title))
    if fresh:
        return skeleton
    data = {}
    if attention_row is not None:
        attention_row = np.asarray(attention_row, dtype=np.float64)
        data[0] = {"y": attention_row}
    top = 1.0 if attention_row is None else max(float(attention_row.max()), 1e-3) * 1.15
    for i, (model, field) in enumerate(fields.items()):
        start, end = field_window(field, first, second, length)
        low, high = -0.08 * top * (i + 1), -0.08 * top * i - 0.01 * top
        data[i + 1] = {"x": [start - 0.5, end + 0.5, end + 0.5, start - 0.5, start - 0.5],
                       "y": [low, low, high, high, low],
                       "name": f"{labels.get(model, model)}: one output sees {start}..{end}"}
    data[len(fields) + 1] = {"x": [first, second], "y": [top, top], "text": list(names)}
    layout = {"shapes": {0: {"x0": first, "x1": first}, 1: {"x0": second, "x1": second}},
              "yaxis": {"range": [-0.08 * top * (len(fields) + 0.3), top * 1.18]}, "title": {"text": title}}
    return patch(skeleton, data=data, layout=layout)
