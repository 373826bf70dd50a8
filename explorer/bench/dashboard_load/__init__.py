"""Load and latency of the Voilà dashboard on this machine (loopback only).

Run ``python -m explorer.bench.dashboard_load visitors ...``, ``... serve-only ...`` or ``... latency ...``
(``--help`` for options). One module per responsibility:

* :mod:`.common`: selectors, constants, percentiles (:func:`summarize`), argument checks, machine metadata, the
  global deadline, loopback HTTP helpers;
* :mod:`.server`: start / stop Voilà, its kernels, RSS and CPU sampling, the preheated pool, culling;
* :mod:`.browser`: headless Chromium visitors (Playwright);
* :mod:`.visitors`: N browser visitors at once: first plot, memory, culling (``visitors``);
* :mod:`.http_visitors`: N plain HTTP visitors at once, no browser: the server's own cost (``serve-only``);
* :mod:`.latency`: one visitor, control change -> settled plot (``latency``);
* :mod:`.cli`: parsing and ``main``.
"""

from .browser import Visitor, chromium_browser, close_visitor, new_visitor, visit
from .cli import build_parser, main, parse_args
from .common import (DASHBOARD, MAX_VISITORS, NOT_LOOPBACK, NOTEBOOKS, PERCENTILE_METHOD, ROOT, SELECTORS, TAB_TITLES,
                     Deadline, DeadlineReached, check_counts, check_url, free_port, http_status, machine_metadata,
                     summarize)
from .http_visitors import fetch_page, fetch_together, page_report, serve_only_command
from .latency import LATENCY_NAMES, ROUND_TRIP, ROUND_TRIP_NAME, SCENARIOS, Scenario, latency_command
from .server import (RssSampler, VoilaServer, kernel_alive, kernel_processes, measure_cull, serve, stop_server,
                     tree_cpu_s, tree_rss_mb, voila_command, wait_pool_ready, wait_quiet, wait_until_up)
from .visitors import measure_setting, run_round, summarize_run, visitors_command

__all__ = ["SELECTORS", "summarize", "check_url", "check_counts", "build_parser", "parse_args", "machine_metadata",
           "main", "free_port", "voila_command", "summarize_run", "SCENARIOS", "ROUND_TRIP", "ROUND_TRIP_NAME",
           "LATENCY_NAMES", "TAB_TITLES", "NOT_LOOPBACK", "Scenario", "Deadline", "DeadlineReached", "serve",
           "stop_server", "VoilaServer", "RssSampler", "kernel_processes", "kernel_alive", "measure_cull",
           "wait_pool_ready", "wait_until_up", "http_status", "MAX_VISITORS", "PERCENTILE_METHOD", "ROOT",
           "NOTEBOOKS", "DASHBOARD", "Visitor", "chromium_browser", "close_visitor", "new_visitor", "visit",
           "run_round", "measure_setting", "visitors_command", "latency_command", "fetch_page", "fetch_together",
           "page_report", "serve_only_command", "tree_cpu_s", "tree_rss_mb", "wait_quiet"]
