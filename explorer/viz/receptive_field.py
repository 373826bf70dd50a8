"""Receptive-field figures: the photo with the theoretical box and the effective-field heatmap."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz._spec import SkeletonCache, cached_png_uri, patch, quick_axes

__all__ = ["receptive_field_figure", "receptive_field_spec", "rf_table_html", "box_shape", "zoom_range",
           "png_data_uri"]

Box = Sequence[Sequence[float]]  # ((row_start, row_end), (col_start, col_end)), inclusive pixel indices

RF_COLOUR = "#e4572e"   # theoretical field
ERF_COLOUR = "#17bebb"  # effective field


def box_shape(box: Box) -> dict:
    """Rectangle coordinates for plotly (pixel edges, so an inclusive box ``(a, b)`` spans a-0.5 .. b+0.5)."""
    (r0, r1), (c0, c1) = box
    return {"x0": c0 - 0.5, "x1": c1 + 0.5, "y0": r0 - 0.5, "y1": r1 + 0.5}


def zoom_range(box: Box, shape: Sequence[int], margin: float = 0.5) -> tuple[list[float], list[float]]:
    """Axis ranges (x, then y reversed) showing ``box`` plus ``margin`` of its size on each side, within the image."""
    ranges = []
    for (start, end), size in zip(box, shape):
        pad = margin * (end - start + 1)
        low, high = max(start - pad, 0) - 0.5, min(end + pad, size - 1) + 0.5
        ranges.append([low, high])
    (y_low, y_high), x_range = ranges
    return x_range, [y_high, y_low]


def png_data_uri(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of a (height, width, 3) uint8 image (lossless: the page shows these pixels)."""
    import base64
    import io

    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (height, width, 3) uint8, got {image.shape} {image.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _checked(image, erf) -> tuple[np.ndarray, np.ndarray]:
    """``(image, erf)`` as arrays, after checking that the photo is RGB and the field has its height and width."""
    image = np.asarray(image)
    erf = np.asarray(erf, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (height, width, 3), got {image.shape}")
    if erf.shape != image.shape[:2]:
        raise ValueError(f"erf must have shape {image.shape[:2]} like the image, got {erf.shape}")
    return image, erf


def receptive_field_figure(image: np.ndarray, erf: np.ndarray, rf_box: Box, erf_box: Box,
                           centre: Sequence[float]) -> go.Figure:
    """Photo with the theoretical receptive field and the effective one beside it.

    Args:
        image: (height, width, 3) uint8 photo, the network's input.
        erf: (height, width) effective receptive field, |d y / d x| normalised to sum 1.
        rf_box: theoretical field of the chosen output position, inclusive input pixels (may exceed the image).
        erf_box: square holding 95% of the gradient mass.
        centre: (row, col) input pixel at the centre of the field.

    Returns:
        A figure with two panels; shapes 0/1 are the theoretical/effective boxes on the photo, 2/3 the same on
        the heatmap (zoomed on the theoretical box by :func:`zoom_range`); trace 2 is the centre marker.
        Apps update these in place.
    """
    image, erf = _checked(image, erf)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.06,
                        subplot_titles=("input photo<br>theoretical field (solid), 95% of ERF (dashed)",
                                        "effective receptive field |∂y/∂x|<br>(zoomed on the box)"))
    # the photo as a PNG source, not pixel values: plotly.js draws it as it is instead of painting every pixel into
    # a canvas and re-encoding it on each redraw (that made a slider's redraw take 300 ms in the browser)
    fig.add_trace(go.Image(source=png_data_uri(image), hoverinfo="skip", name="photo"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=erf, colorscale="Viridis", showscale=False, name="ERF",
                             hovertemplate="row %{y}, col %{x}<br>share %{z:.2e}<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[centre[1]], y=[centre[0]], mode="markers", name="centre",
                             marker={"symbol": "x", "size": 9, "color": RF_COLOUR}, hoverinfo="skip"),
                  row=1, col=1)
    for xref, yref in (("x", "y"), ("x2", "y2")):
        fig.add_shape(type="rect", xref=xref, yref=yref, line={"color": RF_COLOUR, "width": 2},
                      **box_shape(rf_box))
        fig.add_shape(type="rect", xref=xref, yref=yref, line={"color": ERF_COLOUR, "width": 2, "dash": "dash"},
                      **box_shape(erf_box))
    height, width = erf.shape
    zoom_x, zoom_y = zoom_range(rf_box, erf.shape)
    fig.layout.xaxis.update(range=[-0.5, width - 0.5], showgrid=False, constrain="domain")
    fig.layout.yaxis.update(range=[height - 0.5, -0.5], showgrid=False, scaleanchor="x", constrain="domain")
    fig.layout.xaxis2.update(range=zoom_x, showgrid=False, constrain="domain")
    fig.layout.yaxis2.update(range=zoom_y, showgrid=False, scaleanchor="x2", constrain="domain")
    # margins fixed to hold the pixel numbers (see explorer.viz._spec.quick_axes)
    fig.update_layout(height=380, margin={"l": 40, "r": 10, "t": 56, "b": 30}, showlegend=False,
                      uirevision="rf", font={"size": 11})
    return quick_axes(fig, fixed_margins=True)


_SKELETONS = SkeletonCache()


def receptive_field_spec(image: np.ndarray, erf: np.ndarray, rf_box: Box, erf_box: Box,
                         centre: Sequence[float]) -> dict:
    """:func:`receptive_field_figure` as a spec dict (see :mod:`explorer.viz._spec`): the first call per image size
    builds the figure with validation; later ones change only the photo, heatmap, centre, boxes and zoom."""
    image, erf = _checked(image, erf)
    skeleton, fresh = _SKELETONS.get(erf.shape, lambda: receptive_field_figure(image, erf, rf_box, erf_box, centre))
    if fresh:
        return skeleton
    zoom_x, zoom_y = zoom_range(rf_box, erf.shape)
    rf, effective = box_shape(rf_box), box_shape(erf_box)
    return patch(skeleton,
                 data={0: {"source": cached_png_uri(image)}, 1: {"z": erf},
                       2: {"x": [_number(centre[1])], "y": [_number(centre[0])]}},
                 layout={"shapes": {0: rf, 1: effective, 2: rf, 3: effective},
                         "xaxis2": {"range": zoom_x}, "yaxis2": {"range": zoom_y}})


def _number(value):
    """A plain Python number (what plotly's validation makes of a numpy scalar in a data list)."""
    return value.item() if isinstance(value, np.generic) else value


def rf_table_html(rows: Sequence[dict], highlight: str | None = None) -> str:
    """HTML table of receptive-field rows ``{name, op, size, stride, padding}`` (tuples per dimension)."""
    def cell(value) -> str:
        if isinstance(value, (tuple, list)):
            value = " × ".join(str(v) for v in value) if len(set(value)) > 1 else str(value[0])
        return html.escape(str(value))

    head = "".join(f"<th style='text-align:right;padding:2px 8px'>{h}</th>"
                   for h in ("layer", "op", "size (px)", "eff. stride", "eff. padding"))
    body = []
    for row in rows:
        style = " style='font-weight:bold'" if row["name"] == highlight else ""
        cells = "".join(f"<td style='text-align:right;padding:2px 8px'>{cell(row[k])}</td>"
                        for k in ("name", "op", "size", "stride", "padding"))
        body.append(f"<tr{style}>{cells}</tr>")
    return f"<table class='rf-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
