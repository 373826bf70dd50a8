"""Figures as plain dicts: build once with plotly's validation, then change only what a control changed.

A figure builder of ``explorer.viz`` returns a validated ``go.Figure`` (plotly checks every property: that catches
our mistakes). Building one costs 10-100 ms, almost all of it in that validation, and a slider step changes a few
arrays and numbers of a figure whose structure stays the same. So each builder has a *spec* form (``*_spec``) that
builds the figure once with the validated builder (the skeleton), keeps it as a plain dict ``{"data": [...],
"layout": {...}}`` (numpy arrays kept as arrays), and on later calls returns a copy of the skeleton with only the
changed entries replaced (:func:`patch`). ``PlotView.update`` sends such a dict without validating it again; tests
build ``go.Figure(spec)`` (validated) from every spec path and compare it, number for number, with the validated
builder.

A spec is never mutated after it is made: :func:`patch` copies only the containers on the changed paths and shares
the rest (so ``PlotView`` can tell by identity that, say, the data did not change and skip re-encoding it).
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import plotly.graph_objects as go

__all__ = ["figure_spec", "patch", "SkeletonCache", "cached_png_uri", "QUICK_AXIS", "quick_axes"]

_DTYPES = {"f8": np.float64, "f4": np.float32, "u1": np.uint8, "i1": np.int8, "i2": np.int16, "u2": np.uint16,
           "i4": np.int32, "u4": np.uint32}


# Axis settings that spare plotly.js measuring every tick label on each redraw (Chromium, one redraw of the speech
# tab's attention map: 52 ms as plotly's defaults have it, 31 ms with the first, 17 ms with both; the receptive-field
# figure 31 -> 16 ms). ``ticklabeloverflow`` "allow" draws a label that would cross the figure's edge instead of
# measuring every label to hide such ones; ``automargin`` False keeps the layout's margins instead of measuring the
# labels to widen them (so it is only for figures whose margins hold their labels: tests/browser/test_figure_margins
# checks that no text of those figures leaves the figure).
QUICK_AXIS = {"ticklabeloverflow": "allow"}
FIXED_MARGINS = {"automargin": False}


def quick_axes(figure: go.Figure, fixed_margins: bool = False) -> go.Figure:
    """Set :data:`QUICK_AXIS` (and, with ``fixed_margins``, automargin off) on every cartesian axis of ``figure``."""
    settings = {**QUICK_AXIS, **(FIXED_MARGINS if fixed_margins else {})}
    figure.update_xaxes(**settings)
    figure.update_yaxes(**settings)
    return figure


def _decoded(value):
    """plotly's ``{dtype, bdata, shape}`` typed arrays back to numpy arrays, recursively (containers copied)."""
    if isinstance(value, dict):
        if isinstance(value.get("bdata"), str) and value.get("dtype") in _DTYPES:
            flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=_DTYPES[value["dtype"]])
            shape = value.get("shape")
            return flat.reshape([int(s) for s in str(shape).split(",")]) if shape is not None else flat
        return {key: _decoded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decoded(item) for item in value]
    return value


def figure_spec(figure: go.Figure) -> dict:
    """The (validated) figure as a plain dict ``{"data": [...], "layout": {...}}`` with numpy arrays."""
    if not isinstance(figure, go.Figure):
        raise TypeError(f"figure must be a plotly go.Figure, got {type(figure).__name__}")
    spec = _decoded(figure.to_dict())
    return {"data": spec["data"], "layout": spec["layout"]}


def _merged(base, change):
    if isinstance(change, dict) and isinstance(base, list):  # {index: change} into a list (traces, shapes, ...)
        out = list(base)
        for index, item in change.items():
            out[index] = _merged(out[index], item)
        return out
    if isinstance(change, dict) and isinstance(base, dict):
        out = dict(base)
        for key, item in change.items():
            out[key] = _merged(base.get(key), item)
        return out
    return change


def patch(spec: dict, data: dict | None = None, layout: dict | None = None) -> dict:
    """A new spec: ``spec`` with ``data`` (``{trace index: {property: value}}``) and ``layout`` (nested
    ``{property: value}``; ``{index: ...}`` reaches into a list such as ``shapes``) merged in. Dict values merge
    into dicts; any other value replaces. Unchanged parts are shared, not copied."""
    return {"data": spec["data"] if not data else _merged(spec["data"], data),
            "layout": spec["layout"] if not layout else _merged(spec["layout"], layout)}


class SkeletonCache:
    """Skeletons per structural key (e.g. panel count, image shape), built by a validated builder on first use."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, dict] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], go.Figure]) -> tuple[dict, bool]:
        """``(skeleton, fresh)``: ``fresh`` is True when it was just built (it then holds the builder's values)."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key], False
        skeleton = figure_spec(build())
        self._items[key] = skeleton
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return skeleton, True


_PNG: OrderedDict[tuple, str] = OrderedDict()


def cached_png_uri(image: np.ndarray) -> str:
    """:func:`explorer.viz.receptive_field.png_data_uri`, remembered by the image's bytes (the same photo under a
    moving box is encoded once)."""
    from explorer.viz.receptive_field import png_data_uri

    image = np.ascontiguousarray(image)
    key = (image.shape, str(image.dtype), hashlib.blake2b(image.tobytes(), digest_size=16).digest())
    if key in _PNG:
        _PNG.move_to_end(key)
        return _PNG[key]
    uri = png_data_uri(image)
    _PNG[key] = uri
    while len(_PNG) > 16:
        _PNG.popitem(last=False)
    return uri
