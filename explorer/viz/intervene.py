"""Intervention figures: numbers per attention head on a layer x head grid, activation patching, what an
ablation does to a sentence-embedding model's output, and one head's query/key arithmetic (arrays in, plotly
figures out; no model code).

Every layer x head heatmap puts heads 1..H on x and layers 1..L on y, layer 1 at the top, as the app's grid of
toggles does, so a cell of a heatmap and its toggle sit in the same place.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.viz._spec import SkeletonCache, patch, quick_axes

__all__ = ["head_numbers_figure", "patching_figure", "output_change_figure", "output_change_spec", "query_key_figure",
           "DIVERGING", "CLEAN_COLOUR", "ABLATED_COLOUR"]

DIVERGING = "RdBu"          # signed numbers, 0 in white (plotly's RdBu: negative red, positive blue)
CLEAN_COLOUR = "#7f7f7f"    # the unchanged model
ABLATED_COLOUR = "#d62728"  # the model with the chosen heads ablated
_FONT = {"size": 13}


def _grid(name: str, values: object, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``values`` as a float64 ``[layer, head]`` array (NaN allowed: an undefined cell is left blank)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be a non-empty [layer, head] array, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (the other arrays' [layer, head]), got {array.shape}")
    return array


def _vector(name: str, values: object, n: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or (n is not None and array.shape[0] != n):
        want = "a 1-D array" if n is None else f"a 1-D array of {n} values"
        raise ValueError(f"{name} must be {want}, got shape {array.shape}")
    return array


def _limit(values: np.ndarray) -> float:
    """Largest finite |value| (1 when there is none), for a colour scale centred on 0."""
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _head_axes(layers: int, heads: int, suffix: str = "") -> dict:
    return {f"xaxis{suffix}": {"tickmode": "array", "tickvals": list(range(1, heads + 1)), "title": "head",
                               "constrain": "domain"},
            f"yaxis{suffix}": {"tickmode": "array", "tickvals": list(range(1, layers + 1)),
                               "ticktext": [f"L{l}" for l in range(1, layers + 1)], "autorange": "reversed",
                               "title": "layer"}}


def head_numbers_figure(attention: object, importance: object, effect: object, word: str | None = None) -> go.Figure:
    """The three numbers per head side by side, each a layer x head heatmap with its own colour bar.

    Args:
        attention: ``[layer, head]`` attention weight on the pair's shared word (NaN where there is no word).
        importance: ``[layer, head]`` gradient importance ``|d similarity / d xi|`` (Michel et al. 2019).
        effect: ``[layer, head]`` measured change of the similarity when the head is zero-ablated.
        word: the shared word, for the first panel's title.

    Returns:
        Figure with traces 0, 1, 2 = attention, importance, effect heatmaps (``z`` = the arrays as given,
        ``x`` = heads 1..H, ``y`` = layers 1..L); the effect's colour scale is centred on 0.
    """
    attention = _grid("attention", attention)
    importance = _grid("importance", importance, attention.shape)
    effect = _grid("effect", effect, attention.shape)
    layers, heads = attention.shape
    x, y = np.arange(1, heads + 1), np.arange(1, layers + 1)
    where = "the shared word" if word is None else f"'{html.escape(word)}'"
    titles = (f"attention on {where}", "|∂sim/∂ξ| (gradient)", "Δ sim, zero-ablated")
    domains = ((0.0, 0.27), (0.365, 0.635), (0.73, 1.0))
    bar_x = (0.28, 0.645, 1.01)
    limit = _limit(effect)
    traces = [
        go.Heatmap(z=attention, x=x, y=y, colorscale="Blues", zmin=0, xaxis="x", yaxis="y", name="attention",
                   colorbar={"x": bar_x[0], "thickness": 10, "len": 0.9},
                   hovertemplate="layer %{y}, head %{x}<br>attention on the word %{z:.3f}<extra></extra>"),
        go.Heatmap(z=importance, x=x, y=y, colorscale="Purples", zmin=0, xaxis="x2", yaxis="y2", name="importance",
                   colorbar={"x": bar_x[1], "thickness": 10, "len": 0.9},
                   hovertemplate="layer %{y}, head %{x}<br>|∂sim/∂ξ| %{z:.4f}<extra></extra>"),
        go.Heatmap(z=effect, x=x, y=y, colorscale=DIVERGING, zmid=0, zmin=-limit, zmax=limit, xaxis="x3",
                   yaxis="y3", name="ablation effect", colorbar={"x": bar_x[2], "thickness": 10, "len": 0.9},
                   hovertemplate="layer %{y}, head %{x}<br>Δ similarity %{z:+.4f}<extra></extra>"),
    ]
    layout: dict = {"height": 300, "margin": {"l": 50, "r": 40, "t": 40, "b": 45}, "uirevision": "iv-heads",
                    "annotations": []}
    for i, (domain, title) in enumerate(zip(domains, titles)):
        suffix = "" if i == 0 else str(i + 1)
        axes = _head_axes(layers, heads, suffix)
        axes[f"xaxis{suffix}"].update(domain=list(domain), anchor=f"y{suffix}")
        axes[f"yaxis{suffix}"].update(anchor=f"x{suffix}", title="layer" if i == 0 else None)
        layout.update(axes)
        layout["annotations"].append({"text": title, "x": (domain[0] + domain[1]) / 2, "y": 1.0, "xref": "paper",
                                      "yref": "paper", "yanchor": "bottom", "showarrow": False, "font": _FONT})
    return quick_axes(go.Figure(traces, layout))


def patching_figure(restored: object, clean: float, corrupted: float, word: str | None = None) -> go.Figure:
    """Clean -> corrupted activation patching: the share of the similarity drop each head's clean activation
    restores, ``(patched - corrupted) / (clean - corrupted)`` (0 = nothing, 1 = all of it).

    Args:
        restored: ``[layer, head]`` normalised restored share (NaN everywhere when there was nothing to corrupt).
        clean: the similarity of the clean pair.
        corrupted: the similarity with the shared word masked in sentence A.
        word: the masked word (None: the pair shares no word; the title says so).

    Returns:
        Figure with trace 0 = the heatmap (``z`` = ``restored``), colour scale centred on 0.
    """
    restored = _grid("restored", restored)
    layers, heads = restored.shape
    if word is None:
        title = "activation patching: the sentences share no word to corrupt"
    else:
        title = (f"activation patching: share of the drop restored (clean {clean:.3f} → '{html.escape(word)}' "
                 f"masked in A {corrupted:.3f})")
    limit = max(1.0, _limit(restored))
    trace = go.Heatmap(z=restored, x=np.arange(1, heads + 1), y=np.arange(1, layers + 1), colorscale=DIVERGING,
                       zmid=0, zmin=-limit, zmax=limit, name="restored share",
                       colorbar={"thickness": 10, "len": 0.9, "title": "restored"},
                       hovertemplate="layer %{y}, head %{x}<br>restores %{z:.1%} of the drop<extra></extra>")
    layout = {"height": 300, "margin": {"l": 50, "r": 20, "t": 44, "b": 45}, "uirevision": "iv-patching",
              "title": {"text": title, "font": _FONT}, **_head_axes(layers, heads)}
    return quick_axes(go.Figure([trace], layout))


def _output_vectors(labels, pair, batch_clean, batch_now, probability_clean, probability_now, accuracy):
    """The output figure's numbers as checked float64 vectors: one per batch pair (``len(labels)``) or two."""
    n = len(labels)
    return (_vector("batch_clean", batch_clean, n), _vector("batch_now", batch_now, n),
            _vector("probability_clean", probability_clean, n), _vector("probability_now", probability_now, n),
            _vector("pair", pair, 2), _vector("accuracy", accuracy, 2))


def output_change_figure(pair: tuple[float, float], batch_clean: object, batch_now: object,
                         probability_clean: object, probability_now: object, labels: Sequence[str],
                         accuracy: tuple[float, float], ablated: int = 0) -> go.Figure:
    """What the ablation does to the output: the pair's similarity, the similarity of each pair of a fixed batch,
    and the probability that each sentence A picks its own partner among the batch's sentences B.

    Args:
        pair: (clean, now) similarity of the pair.
        batch_clean, batch_now: ``[pairs]`` similarity of each batch pair, unchanged model and now.
        probability_clean, probability_now: ``[pairs]`` probability of the true partner.
        labels: one label per batch pair (its shared word).
        accuracy: (clean, now) share of batch pairs whose A is most similar to its own B.
        ablated: how many heads are ablated now (for the legend).

    Returns:
        Figure with traces 0/1 = pair clean/now, 2/3 = batch similarity clean/now, 4/5 = probability clean/now
        (``y`` = the values as float64).
    """
    labels = [str(label) for label in labels]
    batch_clean, batch_now, prob_clean, prob_now, pair_values, accuracy_values = _output_vectors(
        labels, pair, batch_clean, batch_now, probability_clean, probability_now, accuracy)
    now_name = "unchanged" if ablated == 0 else f"{ablated} head{'s' if ablated != 1 else ''} ablated"
    style = {"clean": {"marker": {"color": CLEAN_COLOUR}, "legendgroup": "clean"},
             "now": {"marker": {"color": ABLATED_COLOUR}, "legendgroup": "now"}}
    x_labels = [html.escape(label) for label in labels]
    traces = [
        go.Bar(x=["clean"], y=pair_values[:1], name="clean model", xaxis="x", yaxis="y", **style["clean"],
               hovertemplate="clean: %{y:.4f}<extra></extra>"),
        go.Bar(x=["now"], y=pair_values[1:], name=now_name, xaxis="x", yaxis="y", **style["now"],
               hovertemplate="now: %{y:.4f}<extra></extra>"),
        go.Bar(x=x_labels, y=batch_clean, name="clean model", xaxis="x2", yaxis="y2", showlegend=False,
               **style["clean"], hovertemplate="%{x}: %{y:.4f}<extra>clean</extra>"),
        go.Bar(x=x_labels, y=batch_now, name=now_name, xaxis="x2", yaxis="y2", showlegend=False, **style["now"],
               hovertemplate="%{x}: %{y:.4f}<extra>now</extra>"),
        go.Bar(x=x_labels, y=prob_clean, name="clean model", xaxis="x3", yaxis="y3", showlegend=False,
               **style["clean"], hovertemplate="%{x}: %{y:.3f}<extra>clean</extra>"),
        go.Bar(x=x_labels, y=prob_now, name=now_name, xaxis="x3", yaxis="y3", showlegend=False, **style["now"],
               hovertemplate="%{x}: %{y:.3f}<extra>now</extra>"),
    ]
    domains = ((0.0, 0.14), (0.24, 0.6), (0.7, 1.0))
    # two short lines each: a panel of a narrow figure is ~100 px wide
    titles = (f"this pair<br>{pair_values[0]:.3f} → {pair_values[1]:.3f}",
              f"batch similarity<br>mean {batch_clean.mean():.3f} → {batch_now.mean():.3f}",
              f"P(own partner)<br>accuracy {accuracy_values[0]:.0%} → {accuracy_values[1]:.0%}")
    layout: dict = {"height": 320, "barmode": "group", "margin": {"l": 45, "r": 10, "t": 56, "b": 70},
                    "uirevision": "iv-output", "legend": {"orientation": "h", "y": -0.28, "x": 0},
                    "annotations": []}
    low = min(0.0, float(np.nanmin(np.concatenate([pair_values, batch_clean, batch_now]))))
    for i, (domain, title) in enumerate(zip(domains, titles)):
        suffix = "" if i == 0 else str(i + 1)
        layout[f"xaxis{suffix}"] = {"domain": list(domain), "anchor": f"y{suffix}", "tickangle": -40 if i else 0}
        y_range = [0, 1.02] if i == 2 else [low, 1.0]
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", "range": y_range,
                                    "title": ("similarity" if i == 0 else "probability" if i == 2 else None)}
        layout["annotations"].append({"text": title, "x": (domain[0] + domain[1]) / 2, "y": 1.0, "xref": "paper",
                                      "yref": "paper", "yanchor": "bottom", "showarrow": False,
                                      "font": {"size": 12}})
    return quick_axes(go.Figure(traces, layout))


def query_key_figure(q: object, k: object, product: object, dots: object, softmax: object, tokens: Sequence[str],
                     query: int, title: str = "") -> go.Figure:
    """One head's attention from one query, taken apart: the query vector, the key vectors, their elementwise
    product (summed along a row and scaled, a dot product: one score per key) and the softmax of the scores.

    Args:
        q: ``[head_dim]`` the query vector.
        k: ``[key, head_dim]`` the key vectors.
        product: ``[key, head_dim]`` ``q * k``.
        dots: ``[key]`` the scaled dot products (the scores before any mask or bias).
        softmax: ``[key]`` the attention weights (equal to ``hook_pattern``).
        tokens: ``[key]`` token text.
        query: the query's position (the row of the same position is outlined).
        title: figure title.

    Returns:
        Figure with traces 0 = q (``z`` ``[1, head_dim]``), 1 = k, 2 = product (``z`` ``[key, head_dim]``),
        3 = dots, 4 = softmax (horizontal bars, ``x`` = values, ``y`` = key positions).
    """
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or 0 in k.shape:
        raise ValueError(f"k must be a non-empty [key, head_dim] array, got shape {k.shape}")
    keys, dim = k.shape
    q = _vector("q", q, dim)
    product = np.asarray(product, dtype=np.float64)
    if product.shape != k.shape:
        raise ValueError(f"product must have k's shape {k.shape}, got {product.shape}")
    dots, softmax = _vector("dots", dots, keys), _vector("softmax", softmax, keys)
    if len(tokens) != keys:
        raise ValueError(f"tokens must have one entry per key ({keys}), got {len(tokens)}")
    if not 0 <= query < keys:
        raise ValueError(f"query must be a key position in [0, {keys - 1}], got {query}")
    positions = np.arange(keys)
    ticks = {"tickmode": "array", "tickvals": list(range(keys)),
             "ticktext": [html.escape(t) for t in tokens], "autorange": "reversed"}
    vector_limit = _limit(np.concatenate([q, k.ravel()]))
    product_limit = _limit(product)
    traces = [
        go.Heatmap(z=q[None, :], colorscale=DIVERGING, zmid=0, zmin=-vector_limit, zmax=vector_limit,
                   showscale=False, xaxis="x2", yaxis="y5", name="q",
                   hovertemplate="q[%{x}] = %{z:.3f}<extra></extra>"),
        go.Heatmap(z=k, colorscale=DIVERGING, zmid=0, zmin=-vector_limit, zmax=vector_limit, showscale=False,
                   xaxis="x", yaxis="y", name="k", hovertemplate="key %{y}, k[%{x}] = %{z:.3f}<extra></extra>"),
        go.Heatmap(z=product, colorscale=DIVERGING, zmid=0, zmin=-product_limit, zmax=product_limit,
                   xaxis="x2", yaxis="y2", name="q·k", colorbar={"thickness": 10, "len": 0.5, "x": 0.6, "y": 0.3},
                   hovertemplate="key %{y}, q[%{x}]·k[%{x}] = %{z:.3f}<extra></extra>"),
        go.Bar(x=dots, y=positions, orientation="h", xaxis="x3", yaxis="y3", name="score",
               marker={"color": np.where(dots >= 0, "#2166ac", "#b2182b")},
               hovertemplate="key %{y}: score %{x:.3f}<extra></extra>"),
        go.Bar(x=softmax, y=positions, orientation="h", xaxis="x4", yaxis="y4", name="softmax",
               marker={"color": "#08519c"}, hovertemplate="key %{y}: weight %{x:.3f}<extra></extra>"),
    ]
    body = [0.0, 0.8]
    layout: dict = {
        "height": int(min(900, 140 + 18 * keys)), "showlegend": False, "uirevision": "iv-qk", "bargap": 0.15,
        "margin": {"l": 90, "r": 10, "t": 50, "b": 40}, "title": {"text": title, "font": _FONT},
        "xaxis": {"domain": [0.0, 0.27], "anchor": "y", "title": "k (key vectors)"},
        "yaxis": {"domain": body, "anchor": "x", **ticks},
        "xaxis2": {"domain": [0.31, 0.58], "anchor": "y2", "title": "q × k (elementwise)"},
        "yaxis2": {"domain": body, "anchor": "x2", "matches": "y", "showticklabels": False},
        "xaxis3": {"domain": [0.66, 0.82], "anchor": "y3", "title": "q·k / √d", "zeroline": True},
        "yaxis3": {"domain": body, "anchor": "x3", "matches": "y", "showticklabels": False},
        "xaxis4": {"domain": [0.85, 1.0], "anchor": "y4", "title": "softmax", "range": [0, 1]},
        "yaxis4": {"domain": body, "anchor": "x4", "matches": "y", "showticklabels": False},
        "yaxis5": {"domain": [0.86, 0.93], "anchor": "x2", "showticklabels": True, "tickmode": "array",
                   "tickvals": [0], "ticktext": ["q"]},
        # the query's own position, outlined across every panel
        "shapes": [{"type": "rect", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": query - 0.5,
                    "y1": query + 0.5, "line": {"color": "#e4572e", "width": 1.5}, "name": "query"}],
    }
    return quick_axes(go.Figure(traces, layout))


_SKELETONS = SkeletonCache()


def output_change_spec(pair: tuple[float, float], batch_clean: object, batch_now: object,
                       probability_clean: object, probability_now: object, labels: Sequence[str],
                       accuracy: tuple[float, float], ablated: int = 0) -> dict:
    """:func:`output_change_figure` as a spec (see :mod:`explorer.viz._spec`): built, with validation, once per
    batch labels; a toggle then changes only the bars, the legend name, the panel titles and the y ranges."""
    labels = [str(label) for label in labels]
    args = (pair, batch_clean, batch_now, probability_clean, probability_now, labels, accuracy, ablated)
    skeleton, fresh = _SKELETONS.get(tuple(labels), lambda: output_change_figure(*args))
    if fresh:
        return skeleton
    batch_clean, batch_now, prob_clean, prob_now, pair_values, accuracy_values = _output_vectors(
        labels, pair, batch_clean, batch_now, probability_clean, probability_now, accuracy)
    now_name = "unchanged" if ablated == 0 else f"{ablated} head{'s' if ablated != 1 else ''} ablated"
    titles = (f"this pair<br>{pair_values[0]:.3f} → {pair_values[1]:.3f}",
              f"batch similarity<br>mean {batch_clean.mean():.3f} → {batch_now.mean():.3f}",
              f"P(own partner)<br>accuracy {accuracy_values[0]:.0%} → {accuracy_values[1]:.0%}")
    low = min(0.0, float(np.nanmin(np.concatenate([pair_values, batch_clean, batch_now]))))
    data = {0: {"y": pair_values[:1]}, 1: {"y": pair_values[1:], "name": now_name}, 2: {"y": batch_clean},
            3: {"y": batch_now, "name": now_name}, 4: {"y": prob_clean}, 5: {"y": prob_now, "name": now_name}}
    layout = {"annotations": {i: {"text": title} for i, title in enumerate(titles)},
              "yaxis": {"range": [low, 1.0]}, "yaxis2": {"range": [low, 1.0]}}
    return patch(skeleton, data=data, layout=layout)
