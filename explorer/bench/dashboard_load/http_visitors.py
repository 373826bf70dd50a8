"""``serve-only``: N visitors arrive at once as plain HTTP requests for the dashboard page, no browser.

What the server alone costs: Voilà renders the notebook server-side (a kernel executes the cells while the page
streams), so one ``GET`` of the dashboard's URL (``/`` of a ``voila dashboard.ipynb`` server, as the ``visitors``
mode opens it) makes a kernel start and run the first tab. For each pool size (``--preheat``) and each N, a fresh
Voilà serves ``notebooks/dashboard.ipynb`` (``notebooks/voila.json`` applies) on a free port of 127.0.0.1:

* before the visitors come, the server (and its pool, once started and quiet) is left until its process tree
  is quiet; ``idle_mb`` is then the summed RSS of Voilà and its kernels (RSS counts shared pages once per process:
  an upper bound), ``idle_kernels`` how many kernels it holds;
* N threads send ``GET /`` together (``start_spread_s`` says within how long) and read the response to its end.
  ``page_s`` is the seconds from sending the request to the last byte, ``first_byte_s`` to the status line;
* a visitor is **served** when the status is 200, the page carries a widget view
  (``application/vnd.jupyter.widget-view+json``, the dashboard's output) and none of the error texts
  (:data:`ERROR_TEXTS`, stderr or error outputs);
* ``cpu_s``: CPU seconds (user + system) of Voilà and all its kernels from just before the visitors arrive to the
  last page's end, counting kernels that exited through their parent's reaped-children times; ``cpu_until_quiet_s``
  goes on until the tree is quiet again (a pool's refill included);
* ``peak_total_rss_mb``: the largest summed RSS of the tree, sampled every 0.5 s during the round.

Kernels left behind: a plain HTTP visitor never opens the kernel's websocket, so its kernel would wait for the
culler; each round's server is stopped after the round (terminate, then its process group and every kernel seen
are killed), and ``kernels_left`` counts kernel processes still alive after that (0 expected).

``--pool-manager fixed`` (default) launches Voilà through ``explorer/deploy/voila_pool.py`` (pooled and
just-handed-out kernels are kept from the culler); ``voila`` runs Voilà's own kernel manager. The machine's load
average (1/5/15 min) is recorded before and after every round: other work on its cores shows there.
Percentiles: :func:`summarize` (numpy, linear) over the served visitors; the others are counted in ``served``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from explorer.bench.common import write_json

from .common import (DASHBOARD, ERROR_TEXTS, NOTEBOOKS, Deadline, DeadlineReached, _fmt, check_url, machine_metadata,
                     summarize)
from .server import (RssSampler, kernel_processes, serve, stop_server, tree_cpu_s, tree_rss_mb, wait_pool_ready,
                     wait_quiet)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PAGE_ERRORS = (*ERROR_TEXTS, "application/vnd.jupyter.stderr")  # Voila's error notice, tracebacks, stderr outputs
KERNEL_ID = re.compile(r'"kernelId":\s*"([0-9a-fA-F-]{36})"')
CHUNK = 64 * 1024


def page_report(status: int, body: str) -> dict:
    """Whether a page body counts as served, and why not (``problems``), with the kernel id it names."""
    problems = []
    if status != 200:
        problems.append(f"HTTP {status}")
    if WIDGET_VIEW not in body:
        problems.append("no widget view in the page")
    problems += [f"error text: {text}" for text in PAGE_ERRORS if text in body]
    match = KERNEL_ID.search(body)
    return {"served": not problems, "problems": problems, "kernel_id": match.group(1) if match else None}


def fetch_page(url: str, timeout: float, t0: float | None = None) -> dict:
    """``GET url`` (loopback only), read to the end; timings, size, status and :func:`page_report`'s verdict."""
    parts = urllib.parse.urlsplit(check_url(url))
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    start = time.perf_counter()
    out: dict = {"start_offset_s": None if t0 is None else start - t0, "first_byte_s": None, "page_s": None,
                 "bytes": 0, "status": None}
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    chunks: list[bytes] = []
    try:
        conn.request("GET", path, headers={"Accept": "text/html"})
        response = conn.getresponse()
        out["status"] = response.status
        out["first_byte_s"] = time.perf_counter() - start
        while True:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"page not complete after {timeout:.0f} s")
            chunk = response.read1(CHUNK) if hasattr(response, "read1") else response.read(CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
        out["page_s"] = time.perf_counter() - start
    except (OSError, http.client.HTTPException) as error:
        out["error"] = f"{type(error).__name__}: {str(error)[:200]}"
    finally:
        conn.close()
    body = b"".join(chunks).decode("utf-8", errors="replace")
    out["bytes"] = len(body)
    report = page_report(out["status"] or 0, body)
    if "error" in out:
        report["served"] = False
        report["problems"].append(out["error"])
    out.update(report)
    if not out["served"]:
        out["page_s_unserved"], out["page_s"] = out["page_s"], None
        out["tail"] = " ".join(re.sub(r"<[^>]*>", " ", body[-2000:]).split())[-300:]  # where the page stopped
    return out


def fetch_together(url: str, n: int, timeout: float) -> tuple[list[dict], float]:
    """``n`` threads released by one barrier, each fetching ``url``; results in thread order and the wall time."""
    barrier = threading.Barrier(n)

    def one(_index: int) -> dict:
        barrier.wait(timeout=60)
        return fetch_page(url, timeout, t0)

    t0 = time.perf_counter() + 0.2  # the barrier opens about now; start offsets are measured from it
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="visitor") as pool:
        results = list(pool.map(one, range(n)))
    return results, time.perf_counter() - t0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def http_round(n: int, preheat: int, args: argparse.Namespace, deadline: Deadline) -> dict:
    """One fresh server, idle memory, ``n`` visitors at once, CPU and peak RSS; the server is stopped after."""
    out: dict = {"n": n, "preheat": preheat, "load_average_before": _load()}
    with serve(NOTEBOOKS, DASHBOARD, deadline, cull_timeout=args.cull_timeout, cull_interval=args.cull_interval,
               preheat=preheat, pool_fix=args.pool_manager == "fixed") as server:
        out["server_start_s"] = server.start_s  # type: ignore[attr-defined]
        out["pool_ready_s"] = wait_pool_ready(server, preheat, deadline) if preheat else None
        out["quiet_after_s"] = wait_quiet(server.psproc, deadline)
        out["idle_mb"], procs = tree_rss_mb(server.psproc)
        out["idle_processes"] = len(procs)
        out["idle_kernels"] = len(kernel_processes(server.psproc))
        cpu_before = tree_cpu_s(server.psproc)
        with RssSampler(server.psproc) as sampler:
            visitors, wall = fetch_together(server.url, n, deadline.left(args.round_timeout))
            cpu_after = tree_cpu_s(server.psproc)
            server.remember_tree()
            with contextlib.suppress(TimeoutError):  # the pool's refill, bounded
                out["quiet_again_s"] = wait_quiet(server.psproc, deadline, timeout=min(args.round_timeout, 180))
            cpu_quiet = tree_cpu_s(server.psproc)
        server.remember_tree()
        log = server.log_text()
        out.update(wall_s=wall, cpu_s=round(cpu_after - cpu_before, 2),
                   cpu_until_quiet_s=round(cpu_quiet - cpu_before, 2),
                   peak_total_rss_mb=sampler.peak_total_mb, peak_kernels=sampler.peak_kernels,
                   kernels_after=len(kernel_processes(server.psproc)),
                   preheated_kernels_used=log.count("Using pre-heated kernel"),
                   culled_by_server=len(re.findall(r"Culling '", log)),
                   refill_waits=re.findall(r"Pool refill waited [\d.]+ s", log),
                   server_errors=[line[:300] for line in log.splitlines()
                                  if re.search(r"ERROR|Error|Timeout|died", line)][-20:])
        seen = dict(server.seen)
    stop_server(server)
    out["kernels_left"] = sum(1 for p in seen.values() if _alive(p))
    out["load_average_after"] = _load()
    stats = summarize([v["page_s"] for v in visitors])
    out.update(visitors=visitors, served=sum(v["served"] for v in visitors), page=stats,
               p50_page_s=stats["p50"], p95_page_s=stats["p95"],
               start_spread_s=max((v["start_offset_s"] or 0.0) for v in visitors))
    return out


def _alive(proc) -> bool:
    with contextlib.suppress(Exception):
        return proc.is_running() and proc.status() != "zombie"
    return False


async def serve_only_command(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    deadline = Deadline(args.timeout)
    meta = machine_metadata(argv, server="own Voila per round (stopped after it)", pool_manager=args.pool_manager,
                            cull={"cull_idle_timeout_s": args.cull_timeout, "cull_interval_s": args.cull_interval},
                            round_timeout_s=args.round_timeout, timeout_s=args.timeout,
                            visitor="plain HTTP GET of the dashboard page read to its end (no browser, no websocket)",
                            served_when=f"HTTP 200, '{WIDGET_VIEW}' in the page, none of {list(PAGE_ERRORS)}",
                            cpu="psutil cpu_times user+system (+children_*) of Voila and all descendants",
                            load_average_before=_load())
    runs = []
    for n in args.n:  # pool sizes side by side for each N: on a shared machine the load drifts between rounds
        for preheat in args.preheat:
            try:
                runs.append(await asyncio.to_thread(http_round, n, preheat, args, deadline))
            except Exception as error:  # this round's failure is its result; the next one still runs
                runs.append({"n": n, "preheat": preheat, "error": f"{type(error).__name__}: {str(error)[:500]}"})
                if isinstance(error, DeadlineReached):
                    break
            finally:  # the rounds so far, in case a later one outlives the run
                write_json(args.out, {"metadata": {**meta, "complete": False}, "runs": runs})
        else:
            continue
        break
    meta.update(load_average_after=_load(), complete=True)
    return {"metadata": meta, "runs": runs}


def serve_only_table(result: dict) -> str:
    lines = [f"{'n':>3} {'pool':>4} {'served':>7} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'cpu s':>7} "
             f"{'+refill':>7} {'idle MB':>8} {'peak MB':>8} {'left':>4}  load 1-min before/after"]
    for run in result["runs"]:
        if "error" in run:
            lines.append(f"{run['n']:>3} {run['preheat']:>4} error: {run['error'][:150]}")
            continue
        lines.append(
            f"{run['n']:>3} {run['preheat']:>4} {run['served']:>3}/{run['n']:<3} {_fmt(run['p50_page_s']):>7} "
            f"{_fmt(run['p95_page_s']):>7} {_fmt(run['page']['max']):>7} {_fmt(run['cpu_s'], '.1f'):>7} "
            f"{_fmt(run['cpu_until_quiet_s'], '.1f'):>7} {_fmt(run['idle_mb'], '.0f'):>8} "
            f"{_fmt(run['peak_total_rss_mb'], '.0f'):>8} {run['kernels_left']:>4}  "
            f"{run['load_average_before'][0]:.1f}/{run['load_average_after'][0]:.1f}")
    return "\n".join(lines)
