"""The browser side: one headless Chromium (Playwright, loopback only), one context per visitor, the first-plot
probe, the page's error report and closing a page like a tab or a dropped connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import CHROMIUM_ARGS, ERROR_TEXTS, NOT_LOOPBACK, OFFLINE_OK, SELECTORS, SLOW_INIT, VIEWPORT
from .server import VoilaServer, kernel_processes, rss_mb

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
  const state = window.__bench = {input: null, last: null, lastPage: null, count: 0, armed: false, observers: []};
  const onInput = (event) => { if (state.armed && state.input === null) state.input = event.timeStamp; };
  for (const type of ["keydown", "pointerdown", "mousedown"]) document.addEventListener(type, onInput, true);
  const options = {subtree: true, attributes: true, childList: true, characterData: true};
  // ``selector``: the figure a sample is about; ``page``: everything the control may redraw (the whole tab)
  state.arm = (selector, page) => {
    for (const observer of state.observers) observer.disconnect();
    const el = document.querySelector(selector), scope = page ? document.querySelector(page) : null;
    if (!el || (page && !scope)) return false;
    Object.assign(state, {input: null, last: null, lastPage: null, count: 0, armed: true, observers: []});
    const watch = (target, mark) => {
      const observer = new MutationObserver(() => { if (state.input !== null) mark(performance.now()); });
      observer.observe(target, options);
      state.observers.push(observer);
    };
    watch(el, (t) => { state.last = t; state.count += 1; });
    if (scope) watch(scope, (t) => { state.lastPage = t; });
    return true;
  };
  // settled: the figure quiet for ``quiet`` ms, and the page too (or still changing 20 s after the input)
  state.settled = (quiet) => {
    const now = performance.now();
    if (state.last === null || now - state.last < quiet) return false;
    return state.lastPage === null || now - state.lastPage >= quiet || now - state.input > 20000;
  };
  state.finish = () => {
    for (const observer of state.observers) observer.disconnect();
    state.observers = [];
    state.armed = false;
    return {input: state.input, last: state.last, lastPage: state.lastPage, count: state.count};
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

