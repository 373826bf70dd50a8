"""Browser fixtures: one Voila server and one Chromium page for the session; timings printed at the end."""

from __future__ import annotations

import json
import time

import pytest

from tests.browser.dashboard_server import ROOT, chromium, voila_server
from tests.browser.hub_env import class_environment, needs_root

TIMINGS: dict[str, float] = {}
# what hostile students tried on the hub and what happened (tests/browser/test_hub_hostile.py), printed at the end
HUB_ATTEMPTS: list[dict] = []

# anywidget rejects a promise when a model takes over 2 s to initialise, but the widget still initialises and
# renders afterwards (each tab's test checks its figures' data). plotly's FigureWidget, which imported its own 5 MB
# bundle per figure, took that long on a loaded 2-core machine; our PlotView does not (0 since), but the message
# stays counted (printed with the timings) rather than treated as a failure, should a loaded machine bring it back.
SLOW_INIT = "[anywidget] Failed to initialize model."

# Voila 0.5's "lab" template links Font Awesome from a CDN; offline those two requests fail (icons only).
KNOWN_OFFLINE = ("https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@",)


@pytest.fixture(scope="session")
def browser():
    """One Chromium for the session (Playwright's sync API allows one running instance per thread)."""
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="session")
def class_env():
    """The students' environment and a Unix name prefix for hubs with one account per student (tests/browser/hub_env.py)."""
    reason = needs_root()
    if reason:
        pytest.skip(reason)
    with class_environment() as env:
        TIMINGS["hub: students' environment installed (s)"] = env.install_s
        yield env


@pytest.fixture(scope="session")
def dashboard_page(browser):
    """The dashboard loaded in headless Chromium; page errors and console errors are collected."""
    with voila_server() as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.errors = []  # type: ignore[attr-defined]
        page.slow_inits = 0  # type: ignore[attr-defined]

        def on_pageerror(exc) -> None:
            if str(exc).startswith(SLOW_INIT):
                page.slow_inits += 1
                TIMINGS["widgets reported slow to initialise (count)"] = page.slow_inits
            else:
                page.errors.append(f"pageerror: {exc}")

        page.on("pageerror", on_pageerror)
        page.failed_requests = []  # type: ignore[attr-defined]
        page.on("requestfailed", lambda request: page.failed_requests.append(request.url))
        # "Failed to load resource" console errors are checked through failed_requests (see KNOWN_OFFLINE)
        page.on("console", lambda msg: msg.type == "error" and not msg.text.startswith("Failed to load resource")
                and page.errors.append(f"console: {msg.text}"))
        start = time.perf_counter()
        page.goto(url)
        page.wait_for_selector(".rf-figure.js-plotly-plot .main-svg", state="visible", timeout=180_000)
        TIMINGS["page load to plot visible (s)"] = time.perf_counter() - start
        yield page


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_sep("-", "browser timings")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {value:.3f}")
        out = ROOT / "tests" / "browser" / "_artifacts"
        out.mkdir(exist_ok=True)
        (out / "timings.json").write_text(json.dumps(TIMINGS, indent=2))
    if HUB_ATTEMPTS:
        out = ROOT / "tests" / "browser" / "_artifacts"
        out.mkdir(exist_ok=True)
        rows = [f"| {a['attempt']} | {a['how']} | {a['outcome']} | {'yes' if a['refused'] else 'NO'} | {a['note']} |"
                for a in HUB_ATTEMPTS]
        (out / "hub-attempts.md").write_text("| attempt | from | what happened | refused | note |\n|---|---|---|---|---|\n"
                                             + "\n".join(rows) + "\n")
        terminalreporter.write_sep("-", "hostile students on the hub: attempts")
        for a in HUB_ATTEMPTS:
            terminalreporter.write_line(f"[{'refused' if a['refused'] else 'NOT REFUSED'}] {a['attempt']} "
                                        f"({a['how']}): {a['outcome']}" + (f" -- {a['note']}" if a["note"] else ""))


def open_tab(page, title: str, ready: str, timeout: float = 60_000):
    """Show the dashboard tab ``title`` and wait until the selector ``ready`` is visible in it."""
    page.locator(".lm-TabBar-tab", has_text=title).click()
    page.wait_for_selector(ready, state="visible", timeout=timeout)
    return page
