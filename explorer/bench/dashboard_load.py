"""Load and latency of the Voilà dashboard, measured in headless Chromium on this machine (loopback only).

Run ``python -m explorer.bench.dashboard_load visitors ...`` or ``... latency ...`` (``--help`` for options).

``visitors``: how long N concurrent visitors wait for the first plot, what the server holds, when it lets go
-----------------------------------------------------------------------------------------------------------------
For each N (and each ``--preheat`` pool size) a fresh Voilà serves ``notebooks/dashboard.ipynb`` from ``notebooks/``
(so ``notebooks/voila.json`` applies; the cull settings below override its own), token-less, on a free port of
127.0.0.1. One Chromium opens N pages, one browser context each; all pages are created first and their
navigations fired together (``start_spread_s`` says within how long).

* ``first_plot_s``: seconds from the page's navigation start (``performance.now()`` is measured from it) to the
  first moment a plot element (``SELECTORS["plot"]``) inside the dashboard has a non-empty ``el.data``, a drawn
  ``.main-svg`` and a non-zero bounding box. An init script checks every 50 ms, so that is its resolution.
* ``errors``: error outputs on the page (stderr output areas, the apps' error blocks, "Error displaying widget"
  and similar texts), page errors and console errors. anywidget's "Failed to initialize model" (a model that took
  over 2 s, which still renders) is counted apart as ``slow_inits``, as the browser tests do.
* ``kernel_rss_mb``: the RSS of each visitor's kernel process when that visitor saw its first plot (the kernel id
  is read from the page's ``jupyter-config-data``, the process found by its connection file name).
* ``peak_total_rss_mb``: the largest sum of RSS over the Voilà process and all its descendants (kernels), sampled
  every 0.5 s with psutil while the visitors load. RSS counts shared pages once per process, so this is an upper
  bound of what the tree really holds.
* ``cull_s``: seconds from closing the pages until every visitor kernel is gone. Voilà 0.5.13 does not serve the
  kernel *list* (``GET /api/kernels`` is redirected to ``/voila/files/...`` and refused) but it does serve
  ``GET /api/kernels/<id>`` without a token (200 while the kernel lives, 404 after), so each visitor's kernel is
  polled by id; kernel processes in the tree are counted as well. ``--close tab`` closes a page the way a browser
  closes a tab: ``beforeunload`` runs and Voilà's page sends a ``POST /voila/api/shutdown/<id>`` beacon. On this
  token-less server that beacon is refused (403 "'_xsrf' argument missing from POST", voila issue #1458), so the
  kernel stays; ``shutdown_beacons`` counts the beacons' statuses from the server log. ``--close drop`` closes the
  page without ``beforeunload`` (a lost connection). Either way the server's culler is what frees the kernel,
  after ``--cull-timeout`` seconds idle, checked every ``--cull-interval`` seconds
  (``--MappingKernelManager.cull_idle_timeout`` / ``cull_interval``, overriding voila.json's 900 s / 60 s), so
  ``cull_s`` is about the idle timeout (counted from the kernel's last message, a little before the close) plus up
  to one cull interval. ``culled_by_server`` counts the culler's
  "Culling ..." log lines after the close, so the JSON says what freed the kernels.
* ``--preheat K`` starts the server with ``--VoilaConfiguration.preheat_kernel=True
  --VoilaConfiguration.default_pool_size=K`` (Voilà runs the notebook in K kernels before anyone asks) and waits
  until the pool's kernels are started and quiet before the visitors come. Pooled kernels are never culled and the
  pool refills after each use, so a preheated server ends with K kernels, not zero.
* A reference page (one IntSlider and one plotly ``go.FigureWidget`` heatmap it updates) is served by the same
  kind of Voilà (same ``voila.json``) from a temporary folder; its median first plot over ``--repeats`` visits
  gives ``first_plot_ratio = median(dashboard, N=1, no preheat) / median(reference)``. N=1 runs of the dashboard
  are repeated ``--repeats`` times too, each on a fresh server.

Percentiles are ``numpy.percentile(..., method="linear")`` over the visitors that saw a plot (``saw_plot``);
visitors that did not are counted in ``all_saw_plot`` / ``saw_plot_count``, not in the percentiles.

``latency``: slider -> settled plot, one visitor
------------------------------------------------
In one page load, for each scenario: a ``MutationObserver`` (subtree, attributes, childList, characterData) is
installed on the scenario's figure container, the control is operated (a key press on a slider handle or a
click), and the sample is ``last mutation - input event``, both on the page's ``performance.now()`` clock
(the input time is the key/pointer event's ``timeStamp``), once 400 ms have passed without a further mutation.
So a sample covers the websocket round trip, the kernel's computation and the browser's redraw. The cost tab's
"Does it fit?" button (an analytic formula, no model) is measured the same way as a trivial round trip, so the
scenarios can be read as ratios to it. The Intervene tab's scenario clicks two cells of its layer x head grid
(heads 7 and 8 of layer 3) in turn, so the ablated heads go {7}, {7, 8}, {8}, {}; each click redraws the output
figure, and in three of the four states the kernel reruns MiniLM's layers 3-6 on the pair and on the fixed batch of
8 pairs (the layers before the first ablated one are the clean run's; the empty state is the clean run itself).
``--only`` measures a subset. The machine's load average before and after goes into the metadata (other work
shares the cores). All CSS selectors are in :data:`SELECTORS`.

Limits: the browser, the server and the kernels share this machine's cores, so at larger N the browser's own
work is part of the wait. Everything is bounded: N <= 32, pool size <= 32, a global ``--timeout`` deadline and a
timeout on every wait; only 127.0.0.1 / localhost is ever contacted (the pages' requests to other hosts, such as
the Voilà template's CDN stylesheet, are aborted); every server is stopped (terminate, then
kill its process group and any kernel still alive) and the browser closed, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import http.client
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from explorer.bench.common import metadata as device_metadata
from explorer.bench.common import write_json

__all__ = ["SELECTORS", "summarize", "check_url", "check_counts", "build_parser", "parse_args", "machine_metadata",
           "main"]

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
                  ".js-plotly-plot[data-error]"),
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
    "cost_ready": ".cost-calc",
    "cost_n": ".cost-calc-n input",
    "cost_button": ".cost-calc",
    "cost_result": ".cost-calc-result",
}
TAB_TITLES = {"rf": "Receptive fields", "attn": "Attention maps", "xm": "Cross-modal", "cost": "Cost scaling",
              "iv": "Intervene"}
ERROR_TEXTS = ("Error displaying widget", "Traceback (most recent call last)", "There was an error")
SLOW_INIT = "[anywidget] Failed to initialize model."
OFFLINE_OK = ("https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@",)  # Voilà's CDN icons, offline

ROOT = Path(__file__).resolve().parents[2]
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer.bench.dashboard_load",
                                     description="Load and latency benchmark of the Voila dashboard (loopback only).")
    sub = parser.add_subparsers(dest="command", required=True)

    vis = sub.add_parser("visitors", help="N concurrent visitors: first plot, memory, kernel culling")
    vis.add_argument("--n", type=int, nargs="+", default=[1, 4, 8, 16], help=f"visitor counts (1..{MAX_VISITORS})")
    vis.add_argument("--preheat", type=int, nargs="+", default=[0],
                     help="preheated kernel pool sizes to compare (0 = no preheat)")
    vis.add_argument("--repeats", type=int, default=3, help="repeats of the reference page and of N=1 (1..10)")
    vis.add_argument("--no-reference", action="store_true", help="skip the one-slider reference page")
    vis.add_argument("--cull-timeout", type=int, default=60, help="server's cull_idle_timeout in seconds")
    vis.add_argument("--cull-interval", type=int, default=10, help="server's cull_interval in seconds")
    vis.add_argument("--close", choices=["tab", "drop"], default="tab",
                     help="tab: close like a browser tab (beforeunload runs); drop: without beforeunload")
    vis.add_argument("--load-timeout", type=float, default=300.0, help="seconds a visitor may wait for a plot")
    vis.add_argument("--out", default=str(ROOT / "assets/benchmarks/dashboard_load_cpu.json"))
    _common_options(vis)

    lat = sub.add_parser("latency", help="one visitor: control change -> settled plot")
    lat.add_argument("--repeats", type=int, default=16, help="samples per scenario (1..200)")
    lat.add_argument("--only", nargs="+", default=None, metavar="SCENARIO",
                     help=f"measure only these scenarios (of {', '.join(LATENCY_NAMES)}; default all)")
    lat.add_argument("--out", default=str(ROOT / "assets/benchmarks/dashboard_latency_cpu.json"))
    _common_options(lat)
    return parser


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="use this running dashboard (loopback only) instead of "
                                                    "starting one")
    parser.add_argument("--timeout", type=float, default=600.0, help="global deadline in seconds")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check ``argv``; argument errors raise ValueError / TypeError naming the option."""
    args = build_parser().parse_args(argv)
    if args.url is not None:
        args.url = check_url(args.url)
    _check_range(args.timeout, "--timeout", 10, 7200)
    if args.command == "visitors":
        args.n = check_counts(args.n, "--n", 1)
        args.preheat = check_counts(args.preheat, "--preheat", 0)
        _check_range(args.repeats, "--repeats", 1, 10)
        _check_range(args.cull_timeout, "--cull-timeout", 1, 3600)
        _check_range(args.cull_interval, "--cull-interval", 1, 600)
        _check_range(args.load_timeout, "--load-timeout", 5, 3600)
        if args.url is not None and args.preheat != [0]:
            raise ValueError("--preheat needs the benchmark's own server; leave it out with --url")
    else:
        _check_range(args.repeats, "--repeats", 1, 200)
        if args.only is not None:
            unknown = [name for name in args.only if name not in LATENCY_NAMES]
            if unknown:
                raise ValueError(f"--only takes scenario names of {LATENCY_NAMES}, got {unknown}")
            args.only = list(dict.fromkeys(args.only))
    return args


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


_KERNEL_FILE = re.compile(r"kernel-([0-9a-fA-F-]{36})\.json")
PROBE_KERNEL = "00000000-0000-0000-0000-000000000000"  # GET /api/kernels/<this> answers 404 without starting one


def kernel_processes(root: psutil.Process) -> dict[str, psutil.Process]:
    """Kernel id -> process, for every descendant of ``root`` started with a ``kernel-<id>.json`` file."""
    found: dict[str, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        for proc in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                match = _KERNEL_FILE.search(" ".join(proc.cmdline()))
                if match:
                    found[match.group(1)] = proc
    return found


def rss_mb(proc: psutil.Process) -> float | None:
    try:
        return proc.memory_info().rss / MB
    except psutil.Error:
        return None


def tree_rss_mb(root: psutil.Process) -> tuple[float, list[psutil.Process]]:
    """Sum of RSS over ``root`` and its descendants, and the processes seen."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, []
    return sum(rss_mb(p) or 0.0 for p in procs), procs


class RssSampler:
    """Samples the RSS of a process tree every ``every`` seconds on a thread; remembers every process seen.

    It also splits the CPU time this machine spent while the visitors loaded: ``cpu_s["server"]`` is Voila and its
    kernels, ``cpu_s["browser"]`` every other process this benchmark started (Playwright's driver and Chromium,
    which in a real class run on the visitors' own machines). Each process counts from its first sample (or its
    start, if it started during the round) to its last; a process that ends between samples loses at most one
    interval.
    """

    def __init__(self, root: psutil.Process, every: float = SAMPLE_EVERY_S) -> None:
        self.root, self.every = root, every
        self.peak_total_mb = 0.0
        self.peak_kernels = 0
        self.samples = 0
        self._me = psutil.Process()
        self._cpu: dict[int, list] = {}  # pid -> [kind, first seconds, last seconds]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._sample_cpu(first=True)

    def _sample_cpu(self, first: bool = False) -> None:
        with contextlib.suppress(psutil.Error):
            server = {self.root.pid} | {p.pid for p in self.root.children(recursive=True)}
            for proc in self._me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    seconds = times.user + times.system
                    entry = self._cpu.get(proc.pid)
                    if entry is None:
                        kind = "server" if proc.pid in server else "browser"
                        self._cpu[proc.pid] = [kind, seconds if first else 0.0, seconds]
                    else:
                        entry[2] = seconds

    @property
    def cpu_s(self) -> dict[str, float]:
        out = {"server": 0.0, "browser": 0.0}
        for kind, start, last in self._cpu.values():
            out[kind] += last - start
        return {k: round(v, 2) for k, v in out.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            total, _procs = tree_rss_mb(self.root)
            self.peak_total_mb = max(self.peak_total_mb, total)
            self.peak_kernels = max(self.peak_kernels, len(kernel_processes(self.root)))
            self._sample_cpu()
            self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample_cpu()


@dataclass
class VoilaServer:
    """A Voilà process this module started (its own session, so its process group is its pid)."""
    proc: subprocess.Popen
    url: str
    log_path: Path
    psproc: psutil.Process
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def remember_tree(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in self.psproc.children(recursive=True):
                self.seen.setdefault(child.pid, child)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""


_STARTED: dict[int, VoilaServer] = {}  # servers alive, for the last-resort cleanup on interpreter exit


def voila_command(notebook: str, port: int, cull_timeout: int, cull_interval: int, preheat: int) -> list[str]:
    """The Voilà command line: loopback, no browser, the cull settings and (``preheat > 0``) a kernel pool."""
    command = [str(Path(sys.executable).with_name("voila")), notebook, "--no-browser", f"--port={port}",
               "--Voila.ip=127.0.0.1",
               f"--MappingKernelManager.cull_idle_timeout={cull_timeout}",
               f"--MappingKernelManager.cull_interval={cull_interval}"]
    if preheat > 0:
        command += ["--VoilaConfiguration.preheat_kernel=True", f"--VoilaConfiguration.default_pool_size={preheat}"]
    return command


def stop_server(server: VoilaServer, grace: float = 20.0) -> None:
    """Terminate Voilà (it shuts its kernels down), then kill its process group and any kernel still alive."""
    server.remember_tree()
    proc = server.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # kernels run in sessions of their own (jupyter_client starts them so): kill the ones we saw, if still there
    for child in server.seen.values():
        with contextlib.suppress(psutil.Error):
            if child.is_running():
                child.kill()
                child.wait(timeout=5)
    _STARTED.pop(proc.pid, None)


def _stop_all_started() -> None:
    for server in list(_STARTED.values()):
        with contextlib.suppress(Exception):
            stop_server(server, grace=5)


atexit.register(_stop_all_started)


def wait_until_up(server: VoilaServer, deadline: Deadline, timeout: float = SERVER_START_S) -> float:
    """Seconds until the server answers HTTP (a 404 for a kernel that does not exist: no kernel is started)."""
    start = time.monotonic()
    limit = start + deadline.left(timeout)
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"voila exited with {server.proc.returncode}:\n{server.log_text()[-3000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            http_status(server.url, f"/api/kernels/{PROBE_KERNEL}")
            return time.monotonic() - start
        if time.monotonic() > limit:
            raise TimeoutError(f"voila on {server.url} did not answer within {timeout:.0f} s")
        time.sleep(0.3)


def wait_pool_ready(server: VoilaServer, size: int, deadline: Deadline, timeout: float = 300.0) -> float:
    """Seconds until ``size`` pooled kernels exist and have been quiet (< 10 % CPU in total) for two 1-s windows."""
    start = time.monotonic()
    limit = start + deadline.left(timeout)
    quiet = 0
    while quiet < 2:
        if time.monotonic() > limit:
            raise TimeoutError(f"the preheated pool of {size} kernel(s) was not ready within {timeout:.0f} s")
        if server.proc.poll() is not None:
            raise RuntimeError(f"voila exited with {server.proc.returncode}:\n{server.log_text()[-3000:]}")
        kernels = list(kernel_processes(server.psproc).values())
        if len(kernels) < size:
            quiet = 0
            time.sleep(0.5)
            continue
        for proc in kernels:
            with contextlib.suppress(psutil.Error):
                proc.cpu_percent(None)
        time.sleep(1.0)
        busy = 0.0
        for proc in kernels:
            with contextlib.suppress(psutil.Error):
                busy += proc.cpu_percent(None)
        quiet = quiet + 1 if busy < 10.0 else 0
    server.remember_tree()
    return time.monotonic() - start


@contextlib.contextmanager
def serve(folder: Path, notebook: str, deadline: Deadline, *, cull_timeout: int = 900, cull_interval: int = 60,
          preheat: int = 0) -> Iterator[VoilaServer]:
    """Start Voilà on ``folder/notebook`` (cwd ``folder``, so its voila.json applies); stop it on exit."""
    deadline.left()
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+b", prefix="voila-bench-", suffix=".log", delete=False)
    proc = subprocess.Popen(voila_command(notebook, port, cull_timeout, cull_interval, preheat), cwd=folder,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = VoilaServer(proc=proc, url=f"http://127.0.0.1:{port}/", log_path=Path(log.name),
                         psproc=psutil.Process(proc.pid))
    _STARTED[proc.pid] = server
    try:
        server.start_s = wait_until_up(server, deadline)  # type: ignore[attr-defined]
        yield server
    finally:
        try:
            stop_server(server)
        finally:
            log.close()
            with contextlib.suppress(OSError):
                os.unlink(log.name)


# ---------------------------------------------------------------------------------------------------------------
# The browser side
# ---------------------------------------------------------------------------------------------------------------

FIRST_PLOT_SCRIPT = """
(() => {
  const S = %s;
  const found = () => {
    for (const el of document.querySelectorAll(S.plot)) {
      if (!Array.isArray(el.data) || el.data.length === 0 || !el.querySelector(S.svg)) continue;
      const box = el.getBoundingClientRect();
      if (box.width > 0 && box.height > 0) return true;
    }
    return false;
  };
  const timer = setInterval(() => {
    if (window.__benchFirstPlotMs === undefined && found()) {
      window.__benchFirstPlotMs = performance.now();
      clearInterval(timer);
    }
  }, 50);
})();
"""

PAGE_REPORT_JS = """
(S) => {
  const text = document.body ? document.body.innerText : "";
  let kernelId = null;
  try { kernelId = JSON.parse(document.querySelector(S.config).textContent).kernelId || null; } catch (e) {}
  return {
    stderr: document.querySelectorAll(S.stderr).length,
    appErrors: Array.from(document.querySelectorAll(S.appError)).map(e => e.textContent.trim().slice(0, 200)),
    texts: S.texts.filter(t => text.includes(t)),
    kernelId,
  };
}
"""

WATCH_JS = """
() => {
  if (window.__bench) return;
  const state = window.__bench = {input: null, last: null, count: 0, armed: false, observer: null};
  const onInput = (event) => { if (state.armed && state.input === null) state.input = event.timeStamp; };
  for (const type of ["keydown", "pointerdown", "mousedown"]) document.addEventListener(type, onInput, true);
  state.arm = (selector) => {
    if (state.observer) state.observer.disconnect();
    const el = document.querySelector(selector);
    if (!el) return false;
    Object.assign(state, {input: null, last: null, count: 0, armed: true});
    state.observer = new MutationObserver(() => {
      if (state.input !== null) { state.last = performance.now(); state.count += 1; }
    });
    state.observer.observe(el, {subtree: true, attributes: true, childList: true, characterData: true});
    return true;
  };
  state.settled = (quiet) => state.last !== null && performance.now() - state.last >= quiet;
  state.finish = () => {
    if (state.observer) state.observer.disconnect();
    state.armed = false;
    return {input: state.input, last: state.last, count: state.count};
  };
}
"""


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        raise RuntimeError(f"Chromium not found at {path}; run 'make browser' or set CHROMIUM")
    return path


@contextlib.asynccontextmanager
async def chromium_browser():
    """One headless Chromium (Playwright's async API); closed on exit."""
    from playwright.async_api import async_playwright

    path = chromium_path()
    async with async_playwright() as playwright:
        browser = await asyncio.wait_for(
            playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True), 60)
        try:
            yield browser
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 30)


@dataclass
class Visitor:
    """One visitor's browser context, page and what it saw."""
    context: object
    page: object
    errors: list[str] = field(default_factory=list)
    slow_inits: int = 0
    result: dict = field(default_factory=dict)


def _listen(visitor: Visitor) -> None:
    page = visitor.page

    def on_pageerror(exc) -> None:
        if str(exc).startswith(SLOW_INIT):
            visitor.slow_inits += 1
        else:
            visitor.errors.append(f"pageerror: {str(exc)[:300]}")

    def on_console(msg) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            if msg.text.startswith(SLOW_INIT):
                visitor.slow_inits += 1
            else:
                visitor.errors.append(f"console: {msg.text[:300]}")

    def on_requestfailed(request) -> None:
        if not request.url.startswith(OFFLINE_OK):
            visitor.errors.append(f"request failed: {request.url[:200]}")

    page.on("pageerror", on_pageerror)
    page.on("console", on_console)
    page.on("requestfailed", on_requestfailed)


async def new_visitor(browser, plot_selector: str) -> Visitor:
    context = await asyncio.wait_for(browser.new_context(viewport=VIEWPORT), 60)
    # loopback only, also for what the page itself asks for (Voila's template links a CDN stylesheet)
    await asyncio.wait_for(context.route(NOT_LOOPBACK, lambda route: route.abort()), 30)
    script = FIRST_PLOT_SCRIPT % json.dumps({"plot": plot_selector, "svg": SELECTORS["plot_svg"]})
    await asyncio.wait_for(context.add_init_script(script), 30)
    page = await asyncio.wait_for(context.new_page(), 60)
    visitor = Visitor(context=context, page=page)
    _listen(visitor)
    return visitor


async def page_report(page) -> dict:
    args = {"config": SELECTORS["config"], "stderr": SELECTORS["stderr"], "appError": SELECTORS["app_error"],
            "texts": list(ERROR_TEXTS)}
    return await asyncio.wait_for(page.evaluate(PAGE_REPORT_JS, args), 30)


async def visit(visitor: Visitor, url: str, timeout: float, server: VoilaServer | None, t0: float) -> dict:
    """Navigate, wait for the first plot (up to ``timeout`` s), then read errors and the kernel's RSS."""
    page = visitor.page
    start = time.perf_counter()
    out: dict = {"start_offset_s": start - t0, "first_plot_s": None, "first_plot_wall_s": None, "saw_plot": False}
    try:
        await page.goto(url, wait_until="commit", timeout=timeout * 1e3)
        await page.wait_for_function("() => window.__benchFirstPlotMs !== undefined", polling=250,
                                     timeout=max(timeout - (time.perf_counter() - start), 1) * 1e3)
        out["first_plot_wall_s"] = time.perf_counter() - start
        out["first_plot_s"] = await page.evaluate("() => window.__benchFirstPlotMs") / 1e3
        out["saw_plot"] = True
    except Exception as error:  # a timeout or a crashed page is this visitor's result, not the run's end
        visitor.errors.append(f"no plot: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    try:
        report = await page_report(page)
    except Exception as error:
        report = {"stderr": 0, "appErrors": [], "texts": [], "kernelId": None}
        visitor.errors.append(f"page report: {type(error).__name__}")
    out["kernel_id"] = report["kernelId"]
    out["kernel_rss_mb"] = None
    if server is not None and report["kernelId"]:
        proc = kernel_processes(server.psproc).get(report["kernelId"])
        out["kernel_rss_mb"] = None if proc is None else rss_mb(proc)
    out["error_outputs"] = report["stderr"] + len(report["appErrors"]) + len(report["texts"])
    out["errors"] = ([f"stderr outputs: {report['stderr']}"] if report["stderr"] else []) + \
        [f"app error: {text}" for text in report["appErrors"]] + [f"text: {text}" for text in report["texts"]]
    return out


async def close_visitor(visitor: Visitor, mode: str) -> None:
    """``tab``: like closing a browser tab (beforeunload runs: Voilà's shutdown beacon); ``drop``: without it."""
    page = visitor.page
    with contextlib.suppress(Exception):
        if mode == "tab":
            await asyncio.wait_for(page.close(run_before_unload=True), 15)  # returns before the page has closed
            limit = time.monotonic() + 20
            while not page.is_closed() and time.monotonic() < limit:
                await asyncio.sleep(0.1)
        else:
            await asyncio.wait_for(page.close(), 15)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(visitor.context.close(), 30)


# ---------------------------------------------------------------------------------------------------------------
# visitors: one round = N pages on one server
# ---------------------------------------------------------------------------------------------------------------

def kernel_alive(url: str, kernel_id: str) -> bool | None:
    """True / False from ``GET /api/kernels/<id>`` (200 / 404); None when the server gives no such answer."""
    try:
        status = http_status(url, f"/api/kernels/{kernel_id}")
    except (OSError, http.client.HTTPException):
        return None
    return {200: True, 404: False}.get(status)


async def measure_cull(url: str, server: VoilaServer | None, kernel_ids: list[str], pool: int, log_offset: int,
                       timeout: float) -> dict:
    """Poll until every visitor kernel is gone (by id; else by counting kernel processes down to ``pool``)."""
    start = time.monotonic()
    gone_at: dict[str, float] = {}
    while True:
        elapsed = time.monotonic() - start
        for kid in kernel_ids:
            if kid not in gone_at and await asyncio.to_thread(kernel_alive, url, kid) is False:
                gone_at[kid] = elapsed
        processes = None if server is None else len(kernel_processes(server.psproc))
        by_id = len(gone_at) == len(kernel_ids) if kernel_ids else None
        done = by_id if by_id is not None else (processes is not None and processes <= pool)
        if done or elapsed > timeout:
            break
        await asyncio.sleep(0.5)
    log = server.log_text()[log_offset:] if server is not None else ""
    culled = len(re.findall(r"Culling '", log))
    return {"cull_s": elapsed if done else None, "timed_out": not done, "wait_limit_s": timeout,
            "kernel_gone_s": sorted(gone_at.values()), "kernels_tracked": len(kernel_ids),
            "kernel_processes_left": processes, "pool_size": pool, "culled_by_server": culled if server else None,
            "shut_down_on_close": (len(gone_at) - culled) if server and kernel_ids else None,
            # Voila's beforeunload beacon: 204 = kernel shut down; 403 = refused (no _xsrf, voila issue #1458)
            "shutdown_beacons": _beacons(log) if server else None}


def _beacons(log: str) -> dict[str, int]:
    """HTTP statuses of ``POST /voila/api/shutdown/<id>`` in the server log (one access line per request)."""
    counts: dict[str, int] = {}
    for status in re.findall(r"^(\d{3}) POST /voila/api/shutdown/\S+ \([^)]*\) [\d.]+ms", log, re.MULTILINE):
        counts[status] = counts.get(status, 0) + 1
    return counts


async def run_round(browser, url: str, n: int, plot_selector: str, deadline: Deadline, *,
                    server: VoilaServer | None, load_timeout: float, close: str, cull_wait: float | None,
                    pool: int = 0) -> dict:
    """Open ``n`` pages at once on ``url``, wait for their first plots, then close them and time the cull."""
    visitors: list[Visitor] = []
    try:
        for _ in range(n):
            visitors.append(await new_visitor(browser, plot_selector))
        timeout = deadline.left(load_timeout)
        sampler = RssSampler(server.psproc) if server is not None else contextlib.nullcontext()
        with sampler:
            t0 = time.perf_counter()
            results = await asyncio.gather(*(visit(v, url, timeout, server, t0) for v in visitors))
        if server is not None:
            server.remember_tree()
        for visitor, result in zip(visitors, results):
            result["errors"] = result["errors"] + visitor.errors
            result["slow_inits"] = visitor.slow_inits
        out = {"visitors": results, "start_spread_s": max(r["start_offset_s"] for r in results),
               "peak_total_rss_mb": sampler.peak_total_mb if server else None,
               "peak_kernels": sampler.peak_kernels if server else None,
               "cpu_s": sampler.cpu_s if server else None,
               "rss_samples": sampler.samples if server else 0}
        log_offset = len(server.log_text()) if server is not None else 0
        await asyncio.gather(*(close_visitor(v, close) for v in visitors))
        visitors = []
        if cull_wait is not None:
            kernel_ids = [r["kernel_id"] for r in results if r["kernel_id"]]
            out["cull"] = await measure_cull(url, server, kernel_ids, pool, log_offset, deadline.left(cull_wait))
        return out
    finally:
        await asyncio.gather(*(close_visitor(v, "drop") for v in visitors))


def summarize_run(n: int, preheat: int | None, rounds: list[dict]) -> dict:
    """One (n, preheat) entry: the rounds' visitors pooled, their percentiles, the largest peak and cull time."""
    done = [r for r in rounds if "visitors" in r]
    visitors = [v for r in done for v in r["visitors"]]
    stats = summarize([v["first_plot_s"] for v in visitors])
    culls = [r.get("cull", {}).get("cull_s") for r in done]
    peaks = [r["peak_total_rss_mb"] for r in done if r.get("peak_total_rss_mb") is not None]
    return {
        "n": n, "preheat": preheat, "repeats": len(rounds), "visitors": visitors,
        "p50_first_plot_s": stats["p50"], "p95_first_plot_s": stats["p95"], "first_plot": stats,
        "all_saw_plot": bool(visitors) and all(v["saw_plot"] for v in visitors) and len(done) == len(rounds),
        "saw_plot_count": sum(v["saw_plot"] for v in visitors),
        "error_outputs": sum(v["error_outputs"] for v in visitors),
        "errors": sum(len(v["errors"]) for v in visitors),
        "peak_total_rss_mb": max(peaks) if peaks else None,
        "kernel_rss_mb": [v["kernel_rss_mb"] for v in visitors],
        "cull_s": None if not culls or None in culls else max(culls),
        "cull_mechanism": _mechanism([r.get("cull", {}) for r in done]),
        "rounds": [{k: v for k, v in r.items() if k != "visitors"} for r in rounds],
    }


def _mechanism(culls: list[dict]) -> str | None:
    culled = sum(c.get("culled_by_server") or 0 for c in culls)
    closed = sum(c.get("shut_down_on_close") or 0 for c in culls)
    if not culls or (culled == 0 and closed == 0):
        return None
    if culled and closed:
        return "mixed: culled by the server and shut down on page close"
    return "culled by the server (idle timeout)" if culled else "shut down on page close (Voila's beacon)"


async def measure_setting(browser, args: argparse.Namespace, n: int, preheat: int, deadline: Deadline) -> dict:
    """All rounds of one (n, preheat): ``--repeats`` for N=1, else one; a fresh server each round."""
    repeats = args.repeats if n == 1 else 1
    rounds: list[dict] = []
    plot = f"{SELECTORS['dashboard']} {SELECTORS['plot']}"
    cull_wait = args.cull_timeout + 2 * args.cull_interval + 30
    for _ in range(repeats):
        try:
            if args.url is not None:
                rounds.append(await run_round(browser, args.url, n, plot, deadline, server=None,
                                              load_timeout=args.load_timeout, close=args.close, cull_wait=cull_wait))
                continue
            with serve(NOTEBOOKS, DASHBOARD, deadline, cull_timeout=args.cull_timeout,
                       cull_interval=args.cull_interval, preheat=preheat) as server:
                pool_s = await asyncio.to_thread(wait_pool_ready, server, preheat, deadline) if preheat else None
                result = await run_round(browser, server.url, n, plot, deadline, server=server,
                                         load_timeout=args.load_timeout, close=args.close, cull_wait=cull_wait,
                                         pool=preheat)
                log = server.log_text()
                result.update(server_start_s=server.start_s, pool_ready_s=pool_s, cull_settings_in_log=_cull_line(log),
                              preheated_kernels_used=log.count("Using pre-heated kernel"))
                rounds.append(result)
        except Exception as error:  # this round's failure is its result; the next N still runs
            rounds.append({"error": f"{type(error).__name__}: {str(error)[:500]}"})
            if isinstance(error, DeadlineReached):
                break
    return summarize_run(n, None if args.url else preheat, rounds)


def _cull_line(log: str) -> str | None:
    match = re.search(r"Culling kernels with idle durations > .*", log)
    return match.group(0).strip() if match else None


REFERENCE_SOURCE = """\
import numpy as np
import ipywidgets as W
import plotly.graph_objects as go
from IPython.display import display

slider = W.IntSlider(value=0, min=0, max=20, description="seed")
figure = go.FigureWidget(go.Heatmap(z=np.random.default_rng(0).random((32, 32))))


def update(change):
    figure.data[0].z = np.random.default_rng(change["new"]).random((32, 32))


slider.observe(update, names="value")
display(W.VBox([slider, figure]))
"""


def reference_notebook() -> dict:
    """A one-cell notebook: an IntSlider and a ``go.FigureWidget`` heatmap the slider updates."""
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "bench-reference", "metadata": {},
                       "outputs": [], "source": REFERENCE_SOURCE.splitlines(keepends=True)}],
            "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                        "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


async def measure_reference(browser, args: argparse.Namespace, deadline: Deadline) -> dict:
    """The reference page's first plot, ``--repeats`` visits, each on a fresh server (same voila.json)."""
    samples: list[float | None] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-reference-") as folder:
        Path(folder, "reference.ipynb").write_text(json.dumps(reference_notebook(), indent=1))
        shutil.copy(NOTEBOOKS / "voila.json", Path(folder, "voila.json"))
        for _ in range(args.repeats):
            try:
                with serve(Path(folder), "reference.ipynb", deadline) as server:
                    result = await run_round(browser, server.url, 1, SELECTORS["plot"], deadline, server=server,
                                             load_timeout=args.load_timeout, close="tab", cull_wait=None)
                visitor = result["visitors"][0]
                samples.append(visitor["first_plot_s"])
                errors += visitor["errors"]
            except Exception as error:
                errors.append(f"{type(error).__name__}: {str(error)[:500]}")
                if isinstance(error, DeadlineReached):
                    break
    stats = summarize(samples)
    return {"what": "one IntSlider + one go.FigureWidget heatmap, 1 visitor, fresh server per repeat",
            "source": REFERENCE_SOURCE, "first_plot_s": samples, "median_first_plot_s": stats["median"],
            "first_plot": stats, "errors": errors}


async def visitors_command(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    deadline = Deadline(args.timeout)
    async with chromium_browser() as browser:
        meta = machine_metadata(argv, chromium=browser.version, server=args.url or "own Voila per round",
                                cull={"cull_idle_timeout_s": args.cull_timeout, "cull_interval_s": args.cull_interval,
                                      "flags": ["--MappingKernelManager.cull_idle_timeout",
                                                "--MappingKernelManager.cull_interval"],
                                      "applies": "own servers only" if args.url is None else "not set (--url)"},
                                close=args.close, preheat_flags=["--VoilaConfiguration.preheat_kernel=True",
                                                                 "--VoilaConfiguration.default_pool_size=K"],
                                load_timeout_s=args.load_timeout, timeout_s=args.timeout)
        reference = None if args.no_reference else await measure_reference(browser, args, deadline)
        runs = []
        for preheat in args.preheat:
            for n in args.n:
                runs.append(await measure_setting(browser, args, n, preheat, deadline))
    single = next((r for r in runs if r["n"] == 1 and not r["preheat"]), None)
    ratio = None
    if reference and single and reference["median_first_plot_s"] and single["p50_first_plot_s"]:
        ratio = single["p50_first_plot_s"] / reference["median_first_plot_s"]
    if reference is not None:
        reference["first_plot_ratio"] = ratio
    return {"metadata": meta, "reference": reference, "first_plot_ratio": ratio, "runs": runs}


# ---------------------------------------------------------------------------------------------------------------
# latency: one page, control change -> settled plot
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """Open ``tab``, wait for ``ready``; each sample operates ``control`` and watches ``container``."""
    tab: str
    ready: str
    control: str
    container: str
    keys: tuple[str, ...] = ()        # key presses, cycled (empty: click the control)
    controls: tuple[str, ...] = ()    # controls clicked in turn instead of ``control`` (empty: ``control`` only)
    alternate_input: str | None = None  # an input set to alternating values before each click
    alternate_values: tuple[str, ...] = ()
    ready_timeout_s: float = 180.0


SCENARIOS: dict[str, Scenario] = {
    "receptive_field_layers": Scenario(TAB_TITLES["rf"], SELECTORS["rf_ready"], SELECTORS["rf_slider"],
                                       SELECTORS["rf_figure"], keys=("ArrowRight", "ArrowLeft")),
    "attention_layer": Scenario(TAB_TITLES["attn"], SELECTORS["attn_ready"], SELECTORS["attn_slider"],
                                SELECTORS["attn_figure"], keys=("ArrowRight", "ArrowLeft")),
    "cross_modal_new_scene": Scenario(TAB_TITLES["xm"], SELECTORS["xm_ready"], SELECTORS["xm_button"],
                                      SELECTORS["xm_figure"]),
    # two heads of layer 3 toggled in turn: ablated {7}, {7, 8}, {8}, {} (the last one is the clean state, which the
    # app reads from its clean run; the others run the pair and the batch of 8 pairs through layers 3-6)
    "intervene_toggle": Scenario(TAB_TITLES["iv"], SELECTORS["iv_ready"], SELECTORS["iv_cell"],
                                 SELECTORS["iv_figure"], controls=(SELECTORS["iv_cell"], SELECTORS["iv_cell_2"],
                                                                   SELECTORS["iv_cell"], SELECTORS["iv_cell_2"])),
}
# the trivial round trip: an analytic formula in the kernel, its answer as text (two n's so the text changes)
ROUND_TRIP = Scenario(TAB_TITLES["cost"], SELECTORS["cost_ready"], SELECTORS["cost_button"], SELECTORS["cost_result"],
                      alternate_input=SELECTORS["cost_n"], alternate_values=("65536", "65537"))
ROUND_TRIP_NAME = "round_trip_cost_calc"
LATENCY_NAMES = (*SCENARIOS, ROUND_TRIP_NAME)


async def open_tab(page, scenario: Scenario, deadline: Deadline) -> None:
    await page.locator(SELECTORS["tab"], has_text=scenario.tab).first.click(timeout=deadline.left(30) * 1e3)
    await page.wait_for_selector(scenario.ready, state="visible",
                                 timeout=deadline.left(scenario.ready_timeout_s) * 1e3)


async def one_sample(page, scenario: Scenario, index: int, deadline: Deadline) -> dict:
    """Operate the control once; seconds from the input event to the last mutation of a settled container."""
    if scenario.alternate_input:
        box = page.locator(scenario.alternate_input).first
        await box.fill(scenario.alternate_values[index % len(scenario.alternate_values)], timeout=10_000)
        await box.press("Enter", timeout=10_000)
    if not await page.evaluate("(s) => window.__bench.arm(s)", scenario.container):
        raise LookupError(f"container {scenario.container!r} not found")
    control = page.locator(scenario.controls[index % len(scenario.controls)] if scenario.controls
                           else scenario.control).first
    if scenario.keys:
        await control.focus(timeout=10_000)
        await control.press(scenario.keys[index % len(scenario.keys)], timeout=10_000)
    else:
        await control.click(timeout=10_000)
    await page.wait_for_function("(q) => window.__bench.settled(q)", arg=QUIET_MS, polling=50,
                                 timeout=deadline.left(60) * 1e3)
    done = await page.evaluate("() => window.__bench.finish()")
    if done["input"] is None:
        raise RuntimeError("the input event was not seen")
    return {"latency_s": (done["last"] - done["input"]) / 1e3, "mutations": done["count"]}


async def run_scenario(page, scenario: Scenario, repeats: int, deadline: Deadline) -> dict:
    """``repeats`` samples; on a missing selector or a timeout, ``{"error": ...}`` with the samples so far."""
    samples: list[float] = []
    mutations: list[int] = []
    try:
        await open_tab(page, scenario, deadline)
        await page.evaluate(WATCH_JS)
        for index in range(repeats):
            sample = await one_sample(page, scenario, index, deadline)
            samples.append(sample["latency_s"])
            mutations.append(sample["mutations"])
    except Exception as error:  # a selector that moved must not end the run
        with contextlib.suppress(Exception):
            await page.evaluate("() => window.__bench && window.__bench.finish()")
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}", "samples_s": samples,
                "selectors": _selectors_of(scenario)}
    stats = summarize(samples)
    return {"samples_s": samples, "median_s": stats["median"], "p95_s": stats["p95"], "summary": stats,
            "mutations": mutations, "selectors": _selectors_of(scenario)}


def _selectors_of(scenario: Scenario) -> dict:
    return {"tab": scenario.tab, "ready": scenario.ready, "control": scenario.control,
            "controls": list(scenario.controls), "container": scenario.container, "keys": list(scenario.keys)}


async def latency_page(browser, url: str, repeats: int, deadline: Deadline,
                       only: Sequence[str] | None = None) -> dict:
    """One page: each scenario of ``only`` (default all, the round trip last) ``repeats`` times."""
    visitor = await new_visitor(browser, f"{SELECTORS['dashboard']} {SELECTORS['plot']}")
    chosen = [name for name in LATENCY_NAMES if only is None or name in only]
    try:
        load = await visit(visitor, url, deadline.left(300), None, time.perf_counter())
        scenarios = {}
        if load["saw_plot"]:
            for name in chosen:
                scenario = ROUND_TRIP if name == ROUND_TRIP_NAME else SCENARIOS[name]
                scenarios[name] = await run_scenario(visitor.page, scenario, repeats, deadline)
        else:
            scenarios = {name: {"error": "the dashboard showed no plot: " + "; ".join(load["errors"] + visitor.errors)}
                         for name in chosen}
        base = scenarios.get(ROUND_TRIP_NAME, {}).get("median_s")
        for result in scenarios.values():
            if "median_s" in result and base:
                result["ratio_to_round_trip"] = result["median_s"] / base
        load["errors"] = load["errors"] + visitor.errors
        load["slow_inits"] = visitor.slow_inits
        return {"page_load": load, "scenarios": scenarios}
    finally:
        await close_visitor(visitor, "tab")


async def latency_command(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    deadline = Deadline(args.timeout)
    async with chromium_browser() as browser:
        meta = machine_metadata(argv, chromium=browser.version, server=args.url or "own Voila",
                                settle_quiet_ms=QUIET_MS, selectors=SELECTORS,
                                measure="performance.now() of the last mutation in the container minus the input "
                                        "event's timeStamp, declared settled after QUIET_MS without mutation",
                                timeout_s=args.timeout, only=args.only,
                                # other work on the machine shares its cores: its 1/5/15-minute load, before and after
                                load_average_before=list(os.getloadavg()))
        if args.url is not None:
            result = await latency_page(browser, args.url, args.repeats, deadline, args.only)
        else:
            with serve(NOTEBOOKS, DASHBOARD, deadline) as server:
                result = await latency_page(browser, server.url, args.repeats, deadline, args.only)
    meta["load_average_after"] = list(os.getloadavg())
    return {"metadata": meta, **result}


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------

def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _cpu(run: dict) -> str:
    """Server and browser CPU seconds of the run's last round (see ``RssSampler``)."""
    cpu = next((r["cpu_s"] for r in reversed(run["rounds"]) if r.get("cpu_s")), None)
    return "-" if cpu is None else f"{cpu['server']:.0f}/{cpu['browser']:.0f}"


def visitors_table(result: dict) -> str:
    lines = []
    ref = result.get("reference")
    if ref:
        lines.append(f"reference page: median first plot {_fmt(ref['median_first_plot_s'])} s over "
                     f"{ref['first_plot']['count']} visit(s); dashboard N=1 / reference = "
                     f"{_fmt(result['first_plot_ratio'])}")
    lines.append(f"{'n':>3} {'pool':>4} {'saw':>7} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'peak MB':>8} "
                 f"{'kernel MB':>9} {'cull s':>7} {'errs':>4} {'cpu srv/brw s':>13}  freed by")
    for run in result["runs"]:
        kernels = [k for k in run["kernel_rss_mb"] if k is not None]
        kernel_mb = float(np.median(kernels)) if kernels else None
        pool = "?" if run["preheat"] is None else str(run["preheat"])
        lines.append(
            f"{run['n']:>3} {pool:>4} {run['saw_plot_count']:>3}/{len(run['visitors']):<3} "
            f"{_fmt(run['p50_first_plot_s']):>7} {_fmt(run['p95_first_plot_s']):>7} "
            f"{_fmt(run['first_plot']['max']):>7} "
            f"{_fmt(run['peak_total_rss_mb'], '.0f'):>8} {_fmt(kernel_mb, '.0f'):>9} {_fmt(run['cull_s'], '.1f'):>7} "
            f"{run['error_outputs'] + run['errors']:>4} {_cpu(run):>13}  {run['cull_mechanism'] or '-'}")
        for r in run["rounds"]:
            if "error" in r:
                lines.append(f"      round error: {r['error'][:150]}")
    return "\n".join(lines)


def latency_table(result: dict) -> str:
    load = result["page_load"]
    lines = [f"first plot after {_fmt(load['first_plot_s'])} s; errors: {len(load['errors'])}",
             f"{'scenario':<24} {'n':>3} {'median s':>9} {'p95 s':>7} {'x round trip':>12}"]
    for name, res in result["scenarios"].items():
        if "error" in res:
            lines.append(f"{name:<24} error: {res['error'][:120]}")
        else:
            lines.append(f"{name:<24} {len(res['samples_s']):>3} {_fmt(res['median_s'], '.3f'):>9} "
                         f"{_fmt(res['p95_s'], '.3f'):>7} {_fmt(res.get('ratio_to_round_trip')):>12}")
    return "\n".join(lines)


def _raise_interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse_args(argv)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # unwind through every finally, as on Ctrl-C
    try:
        if args.command == "visitors":
            result = asyncio.run(visitors_command(args, argv))
            table = visitors_table(result)
        else:
            result = asyncio.run(latency_command(args, argv))
            table = latency_table(result)
    except KeyboardInterrupt:
        print("interrupted: servers and browser stopped, nothing written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_all_started()
    print(table)
    print(f"wrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
