"""Speech figures: a log-mel spectrogram with true and predicted word spans, and a tokens x frames cross-attention
map with the DTW path through it (arrays in, plotly figures out; no model code, no widget state).

Both figures put time in seconds on x, so the word spans of one and the path of the other can be read against the
same clock: log-mel frame ``i`` is centred at ``i * hop_seconds`` (10 ms hop, centred STFT) and encoder frame ``j``
at ``j * frame_seconds`` (20 ms: the encoder's stride-2 conv keeps every other mel frame).

Word spans are layout shapes, one per word and kind, named so that a page script or a test can find them:
``"true i"`` / ``"predicted i"`` are the strips above the spectrogram (``x0`` = start, ``x1`` = end, in seconds,
labelled with the word), and ``"true start i"``, ``"true end i"``, ``"predicted start i"``, ``"predicted end i"`` are
the vertical lines over it (``x0 == x1``). Word labels are the strips' shape labels (not annotations), so a long
sentence's labels never count as overlapping titles.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.viz._spec import FIXED_MARGINS, QUICK_AXIS, figure_spec

__all__ = ["spectrogram_figure", "spectrogram_spec", "attention_figure", "attention_spec", "word_shapes",
           "token_label", "TRUE_COLOUR", "PREDICTED_COLOUR", "PATH_COLOUR"]

TRUE_COLOUR = "#2ca02c"       # eSpeak's own word times
PREDICTED_COLOUR = "#ff7f0e"  # the times read off the model's cross-attention
PATH_COLOUR = "#ff2d55"       # the DTW path
_STRIPS = {"true": (1.015, 1.085), "predicted": (1.095, 1.165)}  # paper y of the two strips above the plot
# margins fixed to hold the axes' labels and titles (see explorer.viz._spec.quick_axes)
_MARGIN = {"l": 64, "r": 16, "b": 54}
_AXIS = {**QUICK_AXIS, **FIXED_MARGINS}


def _spans(name: str, starts: object, ends: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    starts, ends = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    if starts.shape != (n,) or ends.shape != (n,):
        raise ValueError(f"{name} starts and ends must be 1-D arrays of {n} values (one per word), got shapes "
                         f"{starts.shape} and {ends.shape}")
    if not (np.all(np.isfinite(starts)) and np.all(np.isfinite(ends))):
        raise ValueError(f"{name} starts and ends must be finite seconds")
    return starts, ends


def word_shapes(kind: str, words: Sequence[str], starts: np.ndarray, ends: np.ndarray) -> list[dict]:
    """The shapes of one kind of word spans (``"true"`` or ``"predicted"``): a labelled strip per word above the
    plot and a line at each start and end over it (see the module docstring for the names)."""
    if kind not in _STRIPS:
        raise ValueError(f"kind must be 'true' or 'predicted', got {kind!r}")
    colour = TRUE_COLOUR if kind == "true" else PREDICTED_COLOUR
    y0, y1 = _STRIPS[kind]
    dash = "solid" if kind == "true" else "dash"
    shapes: list[dict] = []
    for i, (word, start, end) in enumerate(zip(words, starts, ends)):
        shapes.append({"type": "rect", "name": f"{kind} {i}", "xref": "x", "yref": "paper", "x0": float(start),
                       "x1": float(end), "y0": y0, "y1": y1, "fillcolor": colour, "opacity": 0.35 if i % 2 else 0.55,
                       "line": {"width": 1, "color": colour},
                       "label": {"text": html.escape(str(word)), "font": {"size": 10}}})
        for edge, x in (("start", start), ("end", end)):
            shapes.append({"type": "line", "name": f"{kind} {edge} {i}", "xref": "x", "yref": "paper",
                           "x0": float(x), "x1": float(x), "y0": 0, "y1": 1,
                           "line": {"color": colour, "width": 1.5 if edge == "start" else 1, "dash": dash}})
    return shapes


def spectrogram_figure(mel: object, words: Sequence[str], true_starts: object, true_ends: object,
                       predicted_starts: object | None = None, predicted_ends: object | None = None,
                       hop_seconds: float = 0.01, title: str = "") -> go.Figure:
    """:func:`spectrogram_spec` as a validated ``go.Figure``."""
    return go.Figure(spectrogram_spec(mel, words, true_starts, true_ends, predicted_starts, predicted_ends,
                                      hop_seconds, title))


def spectrogram_spec(mel: object, words: Sequence[str], true_starts: object, true_ends: object,
                     predicted_starts: object | None = None, predicted_ends: object | None = None,
                     hop_seconds: float = 0.01, title: str = "") -> dict:
    """The log-mel spectrogram (time in seconds on x, mel band on y) under the words' true and predicted spans.

    Args:
        mel: ``[band, frame]`` log-mel (``explorer.data.speech.log_mel``).
        words: the utterance's words.
        true_starts, true_ends: ``[word]`` true spans in seconds (``Utterance.starts`` / ``ends``).
        predicted_starts, predicted_ends: ``[word]`` spans read off the model (``WordAlignment.starts`` / ``ends``),
            or None (only the true spans are drawn).
        hop_seconds: seconds between log-mel frames.
        title: the figure's title (plain text; escaped here).

    Returns:
        Figure spec (a plain dict, see :mod:`explorer.viz._spec`; :func:`spectrogram_figure` validates it) with
        trace 0 = the heatmap (``z`` = ``mel`` as float32, ``x`` = frame centres in seconds, ``y`` = band numbers
        0..band-1) and the shapes of :func:`word_shapes` (true ones first).
    """
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or 0 in mel.shape:
        raise ValueError(f"mel must be a non-empty [band, frame] array, got shape {mel.shape}")
    words = [str(w) for w in words]
    starts, ends = _spans("true", true_starts, true_ends, len(words))
    shapes = word_shapes("true", words, starts, ends)
    if (predicted_starts is None) != (predicted_ends is None):
        raise ValueError("predicted_starts and predicted_ends must be given together")
    if predicted_starts is not None:
        shapes += word_shapes("predicted", words, *_spans("predicted", predicted_starts, predicted_ends, len(words)))
    bands, frames = mel.shape
    x = np.arange(frames) * hop_seconds
    trace = {"type": "heatmap", "z": mel, "x": x, "y": np.arange(bands), "colorscale": _colorscale("Magma"),
             "showscale": False, "name": "log-mel", "hovertemplate": "%{x:.2f} s, band %{y}: %{z:.2f}<extra></extra>"}
    legend = [{"text": f"<span style='color:{TRUE_COLOUR}'>true</span>", "y": sum(_STRIPS["true"]) / 2},
              {"text": f"<span style='color:{PREDICTED_COLOUR}'>predicted</span>", "y": sum(_STRIPS["predicted"]) / 2}]
    layout = {
        "height": 320, "margin": {**_MARGIN, "t": 78 if not title else 100}, "uirevision": "speech-spectrogram",
        "shapes": shapes,
        "xaxis": {"title": {"text": "time (s)"}, "range": [-hop_seconds / 2, (frames - 0.5) * hop_seconds], **_AXIS},
        "yaxis": {"title": {"text": "mel band"}, "range": [-0.5, bands - 0.5], **_AXIS},
        "annotations": [{"text": a["text"], "x": 0, "xref": "paper", "xanchor": "right", "y": a["y"], "yref": "paper",
                         "yanchor": "middle", "showarrow": False, "font": {"size": 10}, "xshift": -4} for a in legend],
    }
    if title:
        layout["title"] = {"text": html.escape(title), "font": {"size": 13}, "y": 0.98, "yanchor": "top"}
    return {"data": [trace], "layout": {"template": _template(), **layout}}


def token_label(token: str) -> str:
    """How a token is written on an axis: a space as ``␣``, special tokens as they are, HTML escaped."""
    return "␣" if token == " " else html.escape(token)


def attention_figure(values: object, tokens: Sequence[str], path_tokens: object, path_frames: object,
                     frame_seconds: float = 0.02, title: str = "", colorbar: str = "") -> go.Figure:
    """:func:`attention_spec` as a validated ``go.Figure``."""
    return go.Figure(attention_spec(values, tokens, path_tokens, path_frames, frame_seconds, title, colorbar))


def attention_spec(values: object, tokens: Sequence[str], path_tokens: object, path_frames: object,
                   frame_seconds: float = 0.02, title: str = "", colorbar: str = "") -> dict:
    """A tokens x frames map (one head's cross-attention, or the alignment matrix of the chosen heads) with the
    DTW path through it.

    Args:
        values: ``[token, frame]`` map.
        tokens: one label per row (characters, then ``"<eot>"``).
        path_tokens, path_frames: the DTW path, token and encoder-frame index of each step.
        frame_seconds: seconds per encoder frame.
        title: the figure's title (plain text; escaped here).
        colorbar: title of the colour bar.

    Returns:
        Figure spec (a plain dict; :func:`attention_figure` validates it) with trace 0 = the heatmap (``z`` =
        ``values`` as float32, ``x`` = frame times in seconds, ``y`` =
        token indices 0..token-1, token 0 at the top) and trace 1 = the path (``x`` = ``path_frames *
        frame_seconds``, ``y`` = ``path_tokens``).
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"values must be a non-empty [token, frame] array, got shape {values.shape}")
    n_tokens, frames = values.shape
    tokens = [str(t) for t in tokens]
    if len(tokens) != n_tokens:
        raise ValueError(f"tokens must have one label per row of values ({n_tokens}), got {len(tokens)}")
    rows, cols = np.asarray(path_tokens), np.asarray(path_frames)
    if rows.ndim != 1 or rows.shape != cols.shape:
        raise ValueError(f"path_tokens and path_frames must be 1-D arrays of one length, got shapes {rows.shape} "
                         f"and {cols.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= n_tokens or cols.min() < 0 or cols.max() >= frames):
        raise ValueError(f"the path must stay inside the map's {n_tokens} tokens x {frames} frames")
    labels = [token_label(t) for t in tokens]
    heatmap = {"type": "heatmap", "z": values, "x": np.arange(frames) * frame_seconds, "y": np.arange(n_tokens),
               "colorscale": _colorscale("Viridis"), "name": "attention",
               "colorbar": {"thickness": 10, "len": 0.9, "title": {"text": colorbar, "side": "right"}},
               "hovertemplate": "%{x:.2f} s, token %{y}: %{z:.3f}<extra></extra>"}
    path = {"type": "scatter", "x": cols.astype(np.float64) * frame_seconds, "y": rows.astype(np.int64),
            "mode": "lines", "name": "DTW path", "line": {"color": PATH_COLOUR, "width": 2},
            "hovertemplate": "%{x:.2f} s, token %{y}<extra>DTW path</extra>"}
    layout = {
        "height": int(np.clip(110 + 11 * n_tokens, 300, 760)), "uirevision": "speech-attention",
        "margin": {**_MARGIN, "t": 40}, "showlegend": False,
        "title": {"text": html.escape(title), "font": {"size": 13}},
        "xaxis": {"title": {"text": "time (s)"}, "range": [-frame_seconds / 2, (frames - 0.5) * frame_seconds],
                  **_AXIS},
        "yaxis": {"title": {"text": "token"}, "autorange": "reversed", "tickmode": "array",
                  "tickvals": list(range(n_tokens)),
                  "ticktext": labels, "tickfont": {"size": 9 if n_tokens > 30 else 11}, **_AXIS},
    }
    return {"data": [heatmap, path], "layout": {"template": _template(), **layout}}


_DEFAULTS: dict = {}


def _template() -> dict:
    """The default template a validated ``go.Figure`` writes into its layout (shared by every spec, never mutated)."""
    if "template" not in _DEFAULTS:

        _DEFAULTS["template"] = figure_spec(go.Figure())["layout"]["template"]
    return _DEFAULTS["template"]


def _colorscale(name: str) -> list:
    """A named plotly colour scale as plotly's validation writes it (``[[stop, colour], ...]``)."""
    key = f"scale {name}"
    if key not in _DEFAULTS:

        _DEFAULTS[key] = figure_spec(go.Figure(go.Heatmap(colorscale=name)))["data"][0]["colorscale"]
    return _DEFAULTS[key]
