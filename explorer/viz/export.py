"""Export figures: plotly and bokeh figures to PNG/SVG files or bytes, and standalone offline HTML snapshots.

Figures in, files (or bytes) out; no widget state (``explorer.apps._export`` finds a tab's figures and controls).

* **plotly** images: kaleido (it drives the headless Chromium of this machine, Debian's ``chromium``), given the
  installed plotly's own plotly.js and no MathJax (kaleido's default would add MathJax from a CDN).
* **bokeh** images: a second tab of the same browser (``kaleido.Kaleido`` is a choreographer ``Browser``, so nothing
  new is installed and one export starts one Chromium): the figure is embedded in a local page with the installed
  bokeh's inline BokehJS, and BokehJS's own exporter (``PlotView.export``, what bokeh's save tool and
  ``bokeh.io.export_svg`` call) draws it to a canvas (PNG, at ``scale`` device pixels per CSS pixel) or to its SVG
  context (SVG). ``bokeh.io.export_png`` needs selenium and a chromedriver, which this project does not ship.
* **HTML snapshots**: one file with plotly.js and BokehJS inlined (no CDN, no kernel), the figures as JSON
  (plotly's ``to_json``, bokeh's ``json_item``) drawn by them on load, and a read-only table of the controls'
  values. Nothing else goes in: no paths, tensors or tracebacks.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import html
import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import plotly.graph_objects as go

__all__ = ["FORMATS", "IMAGE_FORMATS", "EXPORT_WIDTH", "export_image", "bokeh_images", "render_figures",
           "export_figures", "snapshot_html", "write_snapshot", "download_link", "is_figure"]

FORMATS = {"png": "image/png", "svg": "image/svg+xml", "html": "text/html"}
IMAGE_FORMATS = ("png", "svg")

EXPORT_WIDTH = 1000  # px, for figures without a layout width (they fill their container on screen)
RENDER_TIMEOUT_S = 180.0  # one export: browser start, every figure drawn
NOTHING_DRAWN = "nothing to export: no figure has been drawn yet"


def _is_bokeh(fig: object) -> bool:
    try:
        from bokeh.model import Model
    except ImportError:  # pragma: no cover - bokeh is a dependency
        return False
    return isinstance(fig, Model)


def is_figure(fig: object) -> bool:
    """True for what this module exports: a plotly ``go.Figure`` or a bokeh model (a plot or a layout)."""
    return isinstance(fig, go.Figure) or _is_bokeh(fig)


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a number, got {type(scale).__name__}")
    if not 0.25 <= scale <= 8:
        raise ValueError(f"scale must be in [0.25, 8], got {scale}")
    return float(scale)


def export_image(fig, fmt: str = "png", scale: float = 2.0) -> bytes:
    """Render a plotly figure (kaleido) or a bokeh model (BokehJS in headless Chromium) to PNG or SVG bytes.

    A plotly figure without a layout width is drawn :data:`EXPORT_WIDTH` px wide; a PNG has ``scale`` pixels per
    figure pixel (SVG ignores it). Nothing is fetched from the network.

    Raises:
        ValueError: ``fmt`` is not ``"png"`` or ``"svg"``, or ``scale`` is out of [0.25, 8].
        TypeError: ``fig`` is neither a plotly ``go.Figure`` nor a bokeh model.
        RuntimeError: kaleido or Chromium is missing or failed (the message says what to install).
    """
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"fmt must be one of {list(IMAGE_FORMATS)}, got {fmt!r}")
    scale = _check_scale(scale)
    if not is_figure(fig):
        raise TypeError(f"fig must be a plotly go.Figure or a bokeh model, got {type(fig).__name__}")
    return render_figures({"figure": fig}, (fmt,), scale)[f"figure.{fmt}"]


def _plotly_job(fig: go.Figure, fmt: str, scale: float) -> tuple[dict, dict]:
    """kaleido's (figure dict, options) for one image, sized as ``plotly.io.to_image`` sizes it, except that a
    figure without a layout width gets :data:`EXPORT_WIDTH` (on screen it fills its container)."""
    import plotly.io as pio

    spec = fig.to_dict()
    layout = spec.get("layout", {})
    template = layout.get("template", {}).get("layout", {}) if isinstance(layout.get("template"), dict) else {}
    width = layout.get("width") or template.get("width") or EXPORT_WIDTH
    height = layout.get("height") or template.get("height") or pio.defaults.default_height
    return spec, {"format": fmt, "width": width, "height": height, "scale": scale if fmt == "png" else 1.0}


# --- bokeh through BokehJS in headless Chromium ---------------------------------------------------------------
_BOKEH_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">{resources}</head>
<body style="margin:0">{targets}
<script>
window.__explorerViews = Promise.all({specs}.map((spec, i) => Bokeh.embed.embed_item(spec, "fig-" + i)));
</script></body></html>"""

# BokehJS's own exporter (what its save tool and bokeh.io.export_svg use): a PNG is the composed canvas at the
# page's device pixel ratio (= scale), an SVG the serialised SVG context.
_BOKEH_EXPORT_JS = """(async (fmt) => {
  const all = await window.__explorerViews;
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const out = [];
  for (const views of all) {
    const view = [...views][0];
    const layer = view.export(fmt, true);
    out.push(fmt === "svg" ? layer.ctx.get_serialized_svg(true) : layer.canvas.toDataURL("image/png"));
  }
  return out;
})"""


def _json_script(text: str) -> str:
    """JSON made safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _bokeh_item(model) -> dict:
    from bokeh.embed import json_item

    return json_item(model)


def _bokehjs(models) -> str:
    """Inline ``<script>``/``<style>`` elements of the BokehJS parts these models need (what ``file_html`` with
    ``bokeh.resources.INLINE`` embeds: the core 1.3 MB for plots, the widget and table bundles only if used)."""
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE

    bundle = bundle_for_objs_and_resources(list(models), INLINE)
    return ("".join(f"<style>{css}</style>" for css in bundle.css_raw)
            + "".join(f"<script type='text/javascript'>{js}</script>" for js in bundle.js_raw))


async def _bokeh_in(browser, page: Path, formats: Sequence[str], scale: float) -> dict[str, list[bytes]]:
    """Open ``page`` in a new tab of ``browser`` (a choreographer Browser) and export its figures."""
    tab = await browser.create_tab("about:blank")
    await tab.send_command("Emulation.setDeviceMetricsOverride",
                           params={"width": 1600, "height": 1200, "deviceScaleFactor": scale, "mobile": False})
    await tab.send_command("Page.enable")
    loaded = tab.subscribe_once("Page.loadEventFired")
    await tab.send_command("Page.navigate", params={"url": page.as_uri()})
    await loaded
    results: dict[str, list[bytes]] = {}
    for fmt in formats:
        answer = await tab.send_command("Runtime.evaluate", params={
            "expression": f"{_BOKEH_EXPORT_JS}({json.dumps(fmt)})", "awaitPromise": True, "returnByValue": True})
        result = answer.get("result", {})
        value = result.get("result", {}).get("value")
        if "exceptionDetails" in result or not isinstance(value, list):
            details = result.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text") or str(answer)[:300]
            raise RuntimeError(f"BokehJS could not export {fmt}: {text}")
        if fmt == "png":
            results[fmt] = [base64.b64decode(item.split(",", 1)[1]) for item in value]
        else:
            results[fmt] = [item.encode("utf-8") for item in value]
    return results


async def _render(plotly_jobs: list[tuple[dict, dict]], bokeh_page: Path | None, bokeh_formats: Sequence[str],
                  scale: float) -> tuple[list[bytes], dict[str, list[bytes]]]:
    """One headless Chromium (kaleido's, a choreographer Browser) for every image of one export."""
    import kaleido

    plotlyjs = Path(go.__file__).parents[1] / "package_data" / "plotly.min.js"  # the installed plotly's own
    # mathjax=False: kaleido would otherwise put MathJax from a CDN into its page (no figure here uses LaTeX)
    async with kaleido.Kaleido(plotlyjs=str(plotlyjs) if plotlyjs.is_file() else None, mathjax=False) as browser:
        images = [await browser.calc_fig(spec, opts=opts) for spec, opts in plotly_jobs]
        bokeh = await _bokeh_in(browser, bokeh_page, bokeh_formats, scale) if bokeh_page is not None else {}
    return images, bokeh


def _in_thread(coroutine_factory, timeout: float):
    """Run an async browser session to completion on its own thread and event loop (the caller may be inside a
    running loop, as a Jupyter kernel is)."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(asyncio.wait_for(coroutine_factory(), timeout))
        except BaseException as error:  # handed to the caller's thread
            box["error"] = error

    worker = threading.Thread(target=run, name="explorer-export", daemon=True)
    worker.start()
    worker.join(timeout + 30)
    if worker.is_alive():
        raise RuntimeError(f"export did not finish within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _images(plotly_jobs: list[tuple[dict, dict]], bokeh_models: Sequence, bokeh_formats: Sequence[str],
            scale: float) -> tuple[list[bytes], dict[str, list[bytes]]]:
    """Render plotly jobs and bokeh models (each in every format of ``bokeh_formats``) in one browser session."""
    if not plotly_jobs and not bokeh_models:
        return [], {f: [] for f in bokeh_formats}
    with tempfile.TemporaryDirectory(prefix="explorer-export-") as folder:
        page = None
        if bokeh_models:
            specs = [_bokeh_item(model) for model in bokeh_models]
            page = Path(folder) / "bokeh.html"
            page.write_text(_BOKEH_PAGE.format(resources=_bokehjs(bokeh_models),
                                               targets="".join(f'<div id="fig-{i}"></div>' for i in range(len(specs))),
                                               specs=_json_script(json.dumps(specs))), encoding="utf-8")
        try:
            return _in_thread(lambda: _render(plotly_jobs, page, bokeh_formats, scale), RENDER_TIMEOUT_S)
        except (RuntimeError, asyncio.TimeoutError) as error:
            raise RuntimeError(f"export failed: {type(error).__name__}: {error}") from error
        except Exception as error:  # kaleido/choreographer raise their own types when Chromium is absent or dies
            raise RuntimeError(f"export needs kaleido and Chromium (Debian: apt-get install chromium; or make "
                               f"browser): {type(error).__name__}: {error}") from error


def bokeh_images(models: Sequence, fmt: str | Sequence[str] = "png", scale: float = 2.0):
    """Render bokeh models to PNG/SVG bytes in one headless-Chromium session.

    Args:
        models: bokeh models (plots or layouts).
        fmt: ``"png"`` or ``"svg"`` (a list of bytes is returned, one per model), or a sequence of formats (a dict
            ``{fmt: [bytes per model]}`` is returned).
        scale: device pixels per CSS pixel of a PNG (a 300×200 plot at scale 2 is 600×400 pixels).

    Raises:
        TypeError: a model is not a bokeh model.
        ValueError: an unknown format or a scale out of range.
        RuntimeError: Chromium is missing, or BokehJS failed (the message says which).
    """
    formats = [fmt] if isinstance(fmt, str) else list(fmt)
    for f in formats:
        if f not in IMAGE_FORMATS:
            raise ValueError(f"fmt must be one of {list(IMAGE_FORMATS)}, got {f!r}")
    scale = _check_scale(scale)
    models = list(models)
    for model in models:
        if not _is_bokeh(model):
            raise TypeError(f"models must hold bokeh models, got {type(model).__name__}")
    out = _images([], models, formats, scale)[1]
    return out[formats[0]] if isinstance(fmt, str) else out


# --- several figures ---------------------------------------------------------------------------------------------
def _named_figures(figures, argument: str = "figures") -> dict[str, object]:
    """``{name: figure}`` from a mapping or a sequence (names ``figure-1``, ...); checks types and emptiness."""
    if isinstance(figures, Mapping):
        items = list(figures.items())
    elif isinstance(figures, Sequence) and not isinstance(figures, (str, bytes)):
        items = [(f"figure-{i + 1}", fig) for i, fig in enumerate(figures)]
    elif is_figure(figures):
        items = [("figure-1", figures)]
    else:
        raise TypeError(f"{argument} must be a mapping {{name: figure}} or a list of figures (plotly go.Figure or "
                        f"bokeh models), got {type(figures).__name__}")
    if not items:
        raise ValueError(f"{argument}: {NOTHING_DRAWN}")
    named: dict[str, object] = {}
    for name, fig in items:
        if not isinstance(name, str):
            raise TypeError(f"{argument}: names must be strings, got {type(name).__name__}")
        if not is_figure(fig):
            raise TypeError(f"{argument}[{name!r}] must be a plotly go.Figure or a bokeh model, "
                            f"got {type(fig).__name__}")
        named[name] = fig
    return named


def _safe_name(name: str) -> str:
    """A file-name stem from a figure name: letters, digits, '-' and '_' only."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")
    return stem or "figure"


def _unique_stems(names) -> list[str]:
    stems, seen = [], set()
    for name in names:
        stem, k = _safe_name(name), 2
        candidate = stem
        while candidate in seen:
            candidate, k = f"{stem}-{k}", k + 1
        seen.add(candidate)
        stems.append(candidate)
    return stems


def _check_formats(formats) -> list[str]:
    if isinstance(formats, str):
        formats = (formats,)
    if not isinstance(formats, Sequence):
        raise TypeError(f"formats must be a sequence of format names, got {type(formats).__name__}")
    formats = list(dict.fromkeys(formats))
    if not formats or any(f not in IMAGE_FORMATS for f in formats):
        raise ValueError(f"formats must be a non-empty subset of {list(IMAGE_FORMATS)}, got {formats!r}")
    return formats


def render_figures(figures, formats: Sequence[str] = IMAGE_FORMATS, scale: float = 2.0) -> dict[str, bytes]:
    """Render every figure in every format: ``{file name: bytes}`` (``"<name>.png"``, ``"<name>.svg"``, ...).

    One headless Chromium draws them all: plotly figures through kaleido, bokeh figures through BokehJS in a
    second tab of the same browser.

    Raises:
        TypeError: ``figures`` is not a mapping/list of figures.
        ValueError: no figures (:data:`NOTHING_DRAWN`), or a bad format or scale.
        RuntimeError: the renderer is missing or failed.
    """
    named = _named_figures(figures)
    formats = _check_formats(formats)
    scale = _check_scale(scale)
    stems = dict(zip(named, _unique_stems(named)))
    bokeh_names = [name for name, fig in named.items() if _is_bokeh(fig)]
    plotly_keys = [(name, fmt) for name, fig in named.items() if not _is_bokeh(fig) for fmt in formats]
    plotly, bokeh = _images([_plotly_job(named[name], fmt, scale) for name, fmt in plotly_keys],
                            [named[name] for name in bokeh_names], formats if bokeh_names else (), scale)
    by_key = dict(zip(plotly_keys, plotly))
    out: dict[str, bytes] = {}
    for name in named:
        for fmt in formats:
            data = bokeh[fmt][bokeh_names.index(name)] if name in bokeh_names else by_key[(name, fmt)]
            out[f"{stems[name]}.{fmt}"] = data
    return out


def _writable_folder(folder, argument: str) -> Path:
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a path (str or os.PathLike), got {type(folder).__name__}")
    path = Path(folder)
    if not path.exists():
        raise ValueError(f"{argument}: the folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"{argument}: {str(path)!r} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{argument}: the folder {str(path)!r} is not writable")
    return path


def _write(path: Path, data: bytes, argument: str) -> None:
    try:
        path.write_bytes(data)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionError(f"{argument}: cannot write {str(path)!r}: {error.strerror}") from error
        raise ValueError(f"{argument}: cannot write {str(path)!r}: {error.strerror or error}") from error


def export_figures(folder, figures, formats: Sequence[str] = IMAGE_FORMATS, scale: float = 2.0) -> list[Path]:
    """Write every figure in every format into ``folder`` (``<name>.png``, ``<name>.svg``); return the paths.

    Args:
        folder: an existing, writable folder.
        figures: ``{name: figure}`` or a list of figures (named ``figure-1``, ...); plotly ``go.Figure`` or bokeh
            models. Names become file names (characters other than letters, digits, ``-`` and ``_`` become ``-``).
        formats: a subset of ``("png", "svg")``.
        scale: pixels per figure pixel in a PNG.

    Raises:
        TypeError: ``folder`` is not a path, or ``figures`` holds something that is not a figure.
        ValueError: the folder is missing or not a folder; no figures; a bad format or scale.
        PermissionError: the folder is not writable.
        RuntimeError: the renderer (kaleido / Chromium) is missing or failed.
    """
    path = _writable_folder(folder, "folder")
    rendered = render_figures(figures, formats, scale)
    written = []
    for name, data in rendered.items():
        target = path / name
        _write(target, data, "folder")
        written.append(target)
    return written


# --- standalone HTML snapshot -----------------------------------------------------------------------------------
def _control_text(label: str, value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, (tuple, list)):
        return ", ".join(_control_text(label, v) for v in value)
    raise TypeError(f"controls[{label!r}] must be a str, number, bool, None or a tuple of those, "
                    f"got {type(value).__name__}")


def _control_record(controls) -> dict[str, str]:
    if controls is None:
        return {}
    if not isinstance(controls, Mapping):
        raise TypeError(f"controls must be a mapping {{label: value}}, got {type(controls).__name__}")
    record = {}
    for label, value in controls.items():
        if not isinstance(label, str):
            raise TypeError(f"controls: labels must be strings, got {type(label).__name__}")
        record[label] = _control_text(label, value)
    return record


_SNAPSHOT_STYLE = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 24px;color:#222}
h1{font-size:20px;margin:0 0 4px}.snapshot-note{color:#666;font-size:12px;margin:0 0 12px}
table.snapshot-controls{border-collapse:collapse;font-size:13px;margin-bottom:16px}
table.snapshot-controls th,table.snapshot-controls td{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top;white-space:pre-wrap}table.snapshot-controls th{background:#f5f5f5;font-weight:600}
.snapshot-figure{margin:0 0 20px}.snapshot-figure h2{font-size:14px;font-weight:600;margin:8px 0}"""

_SNAPSHOT_DRAW = """<script>
(function () {
  for (const data of document.querySelectorAll("script.snapshot-data")) {
    const spec = JSON.parse(data.textContent);
    const target = document.getElementById(data.dataset.target);
    try {
      if (data.dataset.kind === "plotly") {
        Plotly.newPlot(target, spec.data, spec.layout || {}, {displaylogo: false, responsive: true});
      } else {
        Bokeh.embed.embed_item(spec, target);
      }
    } catch (error) {
      target.textContent = "This figure could not be drawn: " + error;
    }
  }
})();
</script>"""


def snapshot_html(figures, controls: Mapping[str, object] | None = None, title: str = "Snapshot") -> str:
    """One standalone HTML page: the figures (interactive, drawn offline) and a read-only table of the controls.

    Args:
        figures: ``{name: figure}`` or a list of figures (plotly ``go.Figure`` or bokeh models).
        controls: ``{label: value}`` (str, number, bool, None, or tuples/lists of those), shown as text.
        title: the page's title and heading.

    plotly.js (``include_plotlyjs=True``'s inline copy) and BokehJS (``bokeh.resources.INLINE``) are embedded
    only when a figure needs them; each figure is stored as JSON in a ``<script type="application/json"
    class="snapshot-data">`` (plotly's ``to_json``: numeric arrays as base64 typed arrays; bokeh's ``json_item``)
    and drawn on load. Nothing is loaded from the network.

    Raises:
        TypeError: a wrong type (the argument is named).
        ValueError: no figures (:data:`NOTHING_DRAWN`).
    """
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__}")
    named = _named_figures(figures)
    record = _control_record(controls)
    head = ["<meta charset='utf-8'><meta name='viewport' content='width=device-width'>",
            "<meta name='generator' content='explorer.viz.export.snapshot_html'>",
            f"<title>{html.escape(title)}</title><style>{_SNAPSHOT_STYLE}</style>"]
    if any(isinstance(fig, go.Figure) for fig in named.values()):
        from plotly.offline import get_plotlyjs  # the script include_plotlyjs=True inlines

        head.append(f"<script type='text/javascript'>{get_plotlyjs()}</script>")
    bokeh_models = [fig for fig in named.values() if _is_bokeh(fig)]
    if bokeh_models:
        head.append(_bokehjs(bokeh_models))
    body = [f"<h1>{html.escape(title)}</h1>",
            "<p class='snapshot-note'>A snapshot: the figures as they were drawn, and the controls' values "
            "(read-only). It needs no kernel and no network.</p>"]
    if record:
        rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
                       for label, value in record.items())
        body.append(f"<table class='snapshot-controls'><tbody>{rows}</tbody></table>")
        body.append(f"<script type='application/json' id='snapshot-controls'>"
                    f"{_json_script(json.dumps(record))}</script>")
    for i, (name, fig) in enumerate(named.items()):
        target = f"snapshot-figure-{i + 1}"
        if isinstance(fig, go.Figure):
            kind, spec = "plotly", fig.to_json()
        else:
            kind, spec = "bokeh", json.dumps(_bokeh_item(fig))
        body.append(f"<section class='snapshot-figure'><h2>{html.escape(name)}</h2>"
                    f"<div id='{target}' class='snapshot-{kind}'></div>"
                    f"<script type='application/json' class='snapshot-data' data-kind='{kind}' "
                    f"data-name='{html.escape(name, quote=True)}' data-target='{target}'>{_json_script(spec)}"
                    f"</script></section>")
    body.append(_SNAPSHOT_DRAW)
    return ("<!DOCTYPE html>\n<html lang='en'><head>" + "".join(head) + "</head><body>" + "".join(body)
            + "</body></html>\n")


def write_snapshot(path, figures, controls: Mapping[str, object] | None = None, title: str = "Snapshot") -> Path:
    """Write :func:`snapshot_html` to ``path`` (its folder must exist and be writable); return the path.

    Raises:
        TypeError: ``path`` is not a path, or another argument has a wrong type.
        ValueError: the folder of ``path`` is missing, ``path`` is a folder, or there are no figures.
        PermissionError: the folder or file is not writable.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path (str or os.PathLike), got {type(path).__name__}")
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"path: {str(target)!r} is a folder; give a file name such as snapshot.html")
    _writable_folder(target.parent, "path")
    if target.exists() and not os.access(target, os.W_OK):
        raise PermissionError(f"path: the file {str(target)!r} is not writable")
    page = snapshot_html(figures, controls, title)
    _write(target, page.encode("utf-8"), "path")
    return target


def download_link(data: bytes, filename: str) -> str:
    """An HTML anchor that downloads ``data`` as ``filename`` (a data: URI; works in JupyterLab and Voila)."""
    fmt = filename.rsplit(".", 1)[-1]
    if fmt not in FORMATS:
        raise ValueError(f"filename must end in one of {sorted(FORMATS)}, got {filename!r}")
    payload = base64.b64encode(data).decode("ascii")
    name = html.escape(filename)
    return (f"<a class='export-link' download='{name}' href='data:{FORMATS[fmt]};base64,{payload}'>"
            f"⬇ download {name} ({len(data) / 1024:.0f} kB)</a>")
