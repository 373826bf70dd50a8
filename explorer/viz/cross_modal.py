"""Cross-modal figures: a scene with a query token's attention over patches, the IG map, and each head."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz._spec import SkeletonCache, cached_png_uri, patch, quick_axes
from explorer.viz.receptive_field import Box, box_shape, png_data_uri

__all__ = ["cross_modal_figure", "cross_modal_spec", "object_box", "normalise", "OVERLAY_SCALE"]

# transparent -> red, so the scene stays visible under weak attention
OVERLAY_SCALE = [[0.0, "rgba(228,87,46,0.0)"], [1.0, "rgba(228,87,46,0.85)"]]


def _checked(image, attention, ig, heads) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(image, maps)``: the RGB scene and its maps (attention, Integrated Gradients, each head), each checked to
    have the scene's height and width."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (height, width, 3), got {image.shape}")
    maps = [np.asarray(attention), np.asarray(ig), *np.asarray(heads)]
    for m in maps:
        if m.shape != image.shape[:2]:
            raise ValueError(f"every map must have the image's shape {image.shape[:2]}, got {m.shape}")
    return image, maps


def cross_modal_figure(image: np.ndarray, attention: np.ndarray, ig: np.ndarray, heads: np.ndarray,
                       box: Box | None = None, titles: Sequence[str] | None = None) -> go.Figure:
    """Panels: averaged attention over the scene, Integrated Gradients over the scene, then one panel per head.

    Args:
        image: (height, width, 3) uint8 scene (sent to the page as a PNG ``source``).
        attention: (height, width) attention of the chosen token, heads averaged, upsampled from patches.
        ig: (height, width) |Integrated Gradients| summed over colour channels.
        heads: (head, height, width) attention of each head, upsampled.
        box: ``((row0, row1), (col0, col1))`` inclusive pixel box of the queried object, outlined in every
            panel (none when None).
        titles: one title per panel (2 + heads).

    Returns:
        Figure whose panel k has trace 2k = the scene, 2k+1 = the overlay (normalised to its own maximum);
        shape k outlines the object in panel k. Apps update these in place.
    """
    image, maps = _checked(image, attention, ig, heads)
    n_heads = len(maps) - 2
    cols = max(n_heads, 2)
    specs = [[{"colspan": cols // 2}] + [None] * (cols // 2 - 1) + [{"colspan": cols - cols // 2}]
             + [None] * (cols - cols // 2 - 1), [{} for _ in range(cols)]]
    titles = list(titles) if titles is not None else (["attention (heads averaged)", "Integrated Gradients"]
                                                      + [f"head {h + 1}" for h in range(n_heads)])
    fig = make_subplots(rows=2, cols=cols, specs=specs, subplot_titles=titles, row_heights=[0.62, 0.38],
                        vertical_spacing=0.08, horizontal_spacing=0.03)
    positions = [(1, 1), (1, cols // 2 + 1)] + [(2, h + 1) for h in range(n_heads)]
    source = png_data_uri(image)  # drawn as is by plotly.js (see explorer.viz.receptive_field.png_data_uri)
    for k, ((row, col), values) in enumerate(zip(positions, maps)):
        fig.add_trace(go.Image(source=source, hoverinfo="skip"), row=row, col=col)
        fig.add_trace(go.Heatmap(z=normalise(values), colorscale=OVERLAY_SCALE, zmin=0, zmax=1, showscale=False,
                                 hovertemplate="row %{y}, col %{x}: %{z:.2f} of max<extra></extra>"),
                      row=row, col=col)
        axis = "" if k == 0 else str(k + 1)
        fig.add_shape(type="rect", xref=f"x{axis}", yref=f"y{axis}", line={"color": "#17bebb", "width": 2},
                      **object_box(box))
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for k in range(len(maps)):
        axis = "" if k == 0 else str(k + 1)
        fig.layout[f"yaxis{axis}"].scaleanchor = f"x{axis}"
    fig.update_layout(height=620, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False,
                      uirevision="cross-modal", font={"size": 11})
    return quick_axes(fig)


_SKELETONS = SkeletonCache()


def cross_modal_spec(image: np.ndarray, attention: np.ndarray, ig: np.ndarray, heads: np.ndarray,
                     box: Box | None = None, titles: Sequence[str] | None = None) -> dict:
    """:func:`cross_modal_figure` as a spec (see :mod:`explorer.viz._spec`): built, with validation, once per image
    size, head count and titles; later calls change only the scene, the overlays and the object's outline."""
    image, maps = _checked(image, attention, ig, heads)
    key = (image.shape, len(maps), None if titles is None else tuple(titles))
    skeleton, fresh = _SKELETONS.get(key, lambda: cross_modal_figure(image, attention, ig, heads, box, titles))
    if fresh:
        return skeleton
    source, outline = cached_png_uri(image), object_box(box)
    data = {}
    for k, values in enumerate(maps):
        data[2 * k] = {"source": source}
        data[2 * k + 1] = {"z": normalise(values)}
    return patch(skeleton, data=data, layout={"shapes": {k: outline for k in range(len(maps))}})


def normalise(values: np.ndarray) -> np.ndarray:
    """Scale a nonnegative map to [0, 1] by its maximum (all-zero stays zero)."""
    values = np.asarray(values, dtype=np.float32)
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else values


def object_box(box: Box | None) -> dict:
    """Plotly rectangle around the inclusive pixel box ``((row0, row1), (col0, col1))``; a zero-size one for None
    (the shape stays in the figure, so it can be updated in place)."""
    return {"x0": 0, "x1": 0, "y0": 0, "y1": 0} if box is None else box_shape(box)
