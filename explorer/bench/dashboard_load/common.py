"""Shared parts of the dashboard benchmark: selectors, constants, summaries, argument checks, machine metadata,
the global deadline and loopback HTTP helpers (no browser, no server)."""

from __future__ import annotations

import contextlib
import http.client
import importlib.metadata
import os
import re
import subprocess
import sys
import socket
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from explorer.bench.common import metadata as device_metadata

# ---------------------------------------------------------------------------------------------------------------
# Selectors (update here when the apps change)
# ---------------------------------------------------------------------------------------------------------------
SELECTORS: dict[str, str] = {
    "dashboard": ".explorer-dashboard",                       # the dashboard's Tab widget
    "plot": ".js-plotly-plot",                                # a plotly graph div (el.data, el.layout)
    "plot_svg": ".main-svg",                                  # drawn by plotly.js
    "tab": ".lm-TabBar-tab, .p-TabBar-tab",                   # a tab title (filtered by its text)
    "stderr": ('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], '
               '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'),
    "app_error": (".dash-error, .rf-error, .attn-error, .xm-error, .cost-error, .h2h-error, .lr-error, .iv-error, "
                  ".sp-error, .export-error, .js-plotly-plot[data-error]"),
    "config": "#jupyter-config-data",                         # Voilà's page config (kernelId)
    # latency scenarios
    "rf_ready": ".rf-figure.js-plotly-plot .main-svg",
    "rf_slider": ".rf-layers .noUi-handle",                   # ipywidgets 8 sliders are noUiSlider
    "rf_figure": ".rf-figure",
    "attn_ready": ".attn-heatmap.js-plotly-plot .main-svg",
    "attn_slider": ".attn-layer .noUi-handle",
    "attn_figure": ".attn-heatmap",
    "xm_ready": ".xm-figure.js-plotly-plot .main-svg",
    "xm_button": ".xm-new-scene",
    "xm_figure": ".xm-figure",
    "iv_ready": ".iv-output.js-plotly-plot .main-svg",
    "iv_cell": "button.iv-cell-2-6",                          # the grid's toggles of layer 3, heads 7 and 8
    "iv_cell_2": "button.iv-cell-2-7",
    "iv_figure": ".iv-output",
    "cost_run": ".cost-run",                                  # "Run sweep": times the ops, redraws once
    "cost_figure": ".cost-figure",
    "cost_figure_ready": ".cost-figure.js-plotly-plot .main-svg",
    "h2h_ready": ".h2h-figure.js-plotly-plot .main-svg",
    "h2h_shift": ".h2h-shift .noUi-handle",                   # shift of the test digit: both models rerun
    "h2h_figure": ".h2h-figure",
    "lr_ready": ".lr-curves.js-plotly-plot .main-svg",
    "lr_distance": ".lr-distance .noUi-handle",               # distance d: new sequence, both models rerun
    "lr_figure": ".lr-curves",
    "sp_ready": ".sp-attention.js-plotly-plot .main-svg",
    "sp_example": ".sp-example select",                       # the example utterance (arrow keys step it)
    "sp_figure": ".sp-attention",
    "cost_done": ".cost-status .cost-done",                  # data-seconds: the sweep's timing loop
    "cost_ready": ".cost-calc",
    "cost_n": ".cost-calc-n input",
    "cost_button": ".cost-calc",
    "cost_result": ".cost-calc-result",
}
TAB_TITLES = {"rf": "Receptive fields", "attn": "Attention maps", "xm": "Cross-modal", "cost": "Cost scaling",
              "h2h": "Head to head", "lr": "Long range", "iv": "Intervene", "sp": "Speech"}
ERROR_TEXTS = ("Error displaying widget", "Traceback (most recent call last)", "There was an error")
SLOW_INIT = "[anywidget] Failed to initialize model."
OFFLINE_OK = ("https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@",)  # Voilà's CDN icons, offline

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS = ROOT / "notebooks"
DASHBOARD = "dashboard.ipynb"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
NOT_LOOPBACK = re.compile(r"^(?!(https?|wss?)://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/)\w+://")
MAX_VISITORS = 32
PERCENTILE_METHOD = "numpy.percentile(samples, q, method='linear')"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # N pages are N windows: keep the ones not in front from being throttled
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]
VIEWPORT = {"width": 1400, "height": 1000}
SAMPLE_EVERY_S = 0.5
QUIET_MS = 400
SERVER_START_S = 120.0
MB = 2 ** 20

# ---------------------------------------------------------------------------------------------------------------
# Pure parts: summaries, argument checks, CLI
# ---------------------------------------------------------------------------------------------------------------


def summarize(samples: Sequence[float | None]) -> dict:
    """Count, median, p50, p95, min, max and mean of ``samples`` (``None`` entries are left out and counted)."""
    if isinstance(samples, (str, bytes)) or not hasattr(samples, "__iter__"):
        raise TypeError(f"samples must be a sequence of numbers, got {type(samples).__name__}")
    samples = list(samples)
    values = np.asarray([s for s in samples if s is not None], dtype=float)
    out = {"count": int(values.size), "missing": len(samples) - int(values.size), "method": PERCENTILE_METHOD}
    if values.size == 0:
        return {**out, "median": None, "p50": None, "p95": None, "min": None, "max": None, "mean": None}
    p50, p95 = (float(v) for v in np.percentile(values, [50, 95], method="linear"))
    return {**out, "median": p50, "p50": p50, "p95": p95, "min": float(values.min()), "max": float(values.max()),
            "mean": float(values.mean())}


def check_url(url: str) -> str:
    """``url`` if it is http(s) on 127.0.0.1 / localhost / ::1 with a port; ValueError naming ``--url`` if not."""
    if not isinstance(url, str):
        raise TypeError(f"--url must be a string, got {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--url must start with http:// or https://, got {url!r}")
    if parts.hostname not in LOOPBACK:
        raise ValueError(f"--url must point to this machine (127.0.0.1 or localhost), got host {parts.hostname!r}")
    try:
        parts.port
    except ValueError as error:
        raise ValueError(f"--url has an invalid port: {url!r}") from error
    return url if parts.path else url + "/"


def check_counts(values: Sequence[int], name: str, low: int, high: int = MAX_VISITORS) -> list[int]:
    """``values`` as a list without repeats (order kept); ValueError naming ``name`` if any is outside
    ``[low, high]``, TypeError if one is not an int."""
    if isinstance(values, int):
        values = [values]
    if not values:
        raise ValueError(f"{name} needs at least one value")
    out: list[int] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} takes integers, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        if value not in out:
            out.append(value)
    return out


def _check_range(value: float, name: str, low: float, high: float) -> float:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


# ---------------------------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------------------------

def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_metadata(argv: Sequence[str] | None = None, chromium: str | None = None, **extra) -> dict:
    """Machine, versions, git commit, date (UTC) and command line; ``extra`` is added as given."""
    info = device_metadata()
    status = _git("status", "--porcelain", "--untracked-files=no")
    info.update({
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_total_gb": round(psutil.virtual_memory().total / 2 ** 30, 2),
        "voila": _version("voila"),
        "jupyter_server": _version("jupyter_server"),
        "ipywidgets": _version("ipywidgets"),
        "plotly": _version("plotly"),
        "playwright": _version("playwright"),
        "chromium": chromium,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "command": " ".join([Path(sys.executable).name, "-m", "explorer.bench.dashboard_load",
                             *(sys.argv[1:] if argv is None else argv)]),
        "percentiles": PERCENTILE_METHOD,
    })
    info.update(extra)
    return info


# ---------------------------------------------------------------------------------------------------------------
# Time, processes, the Voilà server
# ---------------------------------------------------------------------------------------------------------------

class DeadlineReached(TimeoutError):
    pass


@dataclass
class Deadline:
    """The run's global deadline; every wait asks it for what is left."""
    seconds: float
    end: float = field(init=False)

    def __post_init__(self) -> None:
        self.end = time.monotonic() + self.seconds

    def left(self, cap: float | None = None) -> float:
        """Seconds left (at most ``cap``); DeadlineReached when none are."""
        left = self.end - time.monotonic()
        if left <= 0.5:
            raise DeadlineReached(f"the global deadline (--timeout {self.seconds:g} s) was reached")
        return left if cap is None else min(left, cap)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the tests' servers use it too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, path: str, timeout: float = 2.0) -> int:
    """HTTP status of ``GET path`` on ``url``'s loopback host (no redirects followed); OSError if no answer."""
    parts = urllib.parse.urlsplit(check_url(url))
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()



def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


