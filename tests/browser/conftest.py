"""Browser fixtures: one Voila server, one JupyterLab and one Chromium for the session; timings printed at the end.

``make test-browser`` runs the suite on two pytest-xdist workers (``--dist loadgroup``). Each test belongs to one of
three groups, whose tests share that group's servers and so run in one worker: ``lab`` (every test in JupyterLab:
the lessons and the apps' scratch notebooks, one JupyterLab), ``hub`` (JupyterHub: the students' environment and
Unix accounts are built once) and ``voila`` (the dashboard's tabs, one Voila server). Each worker writes its
timings and the hub's attempts beside the others'; the controller prints them all.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.browser.dashboard_server import ROOT, chromium, voila_server
from tests.browser.hub_env import class_environment, needs_root
from tests.browser.lab_server import lab_server

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
def lab(browser):
    """The session's JupyterLab over a scratch copy of notebooks/, and the browser: ``(server, browser)``."""
    with lab_server() as server:
        yield server, browser


def group_of(item) -> str:
    """``lab``, ``hub`` or ``voila``: the servers a test needs (see the module docstring)."""
    module = item.module.__name__.rsplit(".", 1)[-1]
    if module.startswith("test_hub"):
        return "hub"
    if module == "test_lab_notebooks" or "lab" in getattr(item, "fixturenames", ()) or "lab_page" in getattr(
            item, "fixturenames", ()):
        return "lab"
    return "voila"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.xdist_group(group_of(item)))


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


ARTIFACTS = ROOT / "tests" / "browser" / "_artifacts"
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # None in a run without xdist, and in its controller


def pytest_sessionstart(session):
    if WORKER is None:  # the run (or its controller) starts: no worker files of an earlier run
        for old in ARTIFACTS.glob("worker-*.json"):
            old.unlink()


def pytest_sessionfinish(session):
    if WORKER is not None:  # a worker hands its timings and the hub's attempts to the controller through a file
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"worker-{WORKER}.json").write_text(json.dumps({"timings": TIMINGS, "attempts": HUB_ATTEMPTS}))


def pytest_terminal_summary(terminalreporter):
    if WORKER is not None:
        return
    for path in sorted(ARTIFACTS.glob("worker-*.json")):
        handed = json.loads(path.read_text())
        TIMINGS.update(handed["timings"])
        HUB_ATTEMPTS.extend(handed["attempts"])
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
