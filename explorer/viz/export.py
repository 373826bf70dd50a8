"""Export figures for papers: plotly figures to PNG/SVG bytes (kaleido), offered as a download link."""

from __future__ import annotations

import base64
import html

import plotly.graph_objects as go

__all__ = ["FORMATS", "export_image", "download_link"]

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}


EXPORT_WIDTH = 1000  # px, for figures without a layout width (they fill their container on screen)


def export_image(fig: go.Figure, fmt: str = "png", scale: float = 2.0) -> bytes:
    """Render a plotly figure  to PNG or SVG bytes with kaleido.

    kaleido drives a headless Chromium on this machine (Debian's ``chromium`` package; ``make browser``
    installs it). Nothing is fetched from the network.

    Raises:
        ValueError: ``fmt`` is not ``"png"`` or ``"svg"``.
        RuntimeError: kaleido or Chromium is missing (the message says what to install).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    figure = go.Figure(fig)  # a plain copy: the size set below stays out of the caller's
    # figures take their width from the page; a file needs one (the width a wide screen gives them)
    width = figure.layout.width or EXPORT_WIDTH
    try:
        return figure.to_image(format=fmt, scale=scale if fmt == "png" else 1.0, width=width)
    except Exception as error:  # kaleido raises several types when Chromium is absent
        raise RuntimeError(f"export needs kaleido and Chromium (Debian: apt-get install chromium; or make browser): "
                           f"{type(error).__name__}: {error}") from error


def download_link(data: bytes, filename: str) -> str:
    """An HTML anchor that downloads ``data`` as ``filename`` (a data: URI; works in JupyterLab and Voila)."""
    fmt = filename.rsplit(".", 1)[-1]
    if fmt not in FORMATS:
        raise ValueError(f"filename must end in one of {sorted(FORMATS)}, got {filename!r}")
    payload = base64.b64encode(data).decode("ascii")
    name = html.escape(filename)
    return (f"<a class='export-link' download='{name}' href='data:{FORMATS[fmt]};base64,{payload}'>"
            f"⬇ download {name} ({len(data) / 1024:.0f} kB)</a>")
