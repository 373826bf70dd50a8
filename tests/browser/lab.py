"""Drive a notebook in JupyterLab from Playwright: open it in a fresh workspace, run all cells, inspect what rendered.

Everything here reads the page as a user's browser has it (DOM, plotly's graph divs, bokeh's live document) or
asks the notebook's kernel (what it displayed), never the test's own copy of the library.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from tests.browser.conftest import SLOW_INIT

# Requests that fail because the machine is offline, by URL prefix (the Voila tests allow Voila's CDN stylesheet).
# None in JupyterLab: it serves every asset itself, and the test server has its news and update checks off.
LAB_KNOWN_OFFLINE: tuple[str, ...] = ()

_CURRENT = "window.jupyterapp && window.jupyterapp.shell.currentWidget"

# Resolves once the notebook ``name`` is the current widget and its kernel is idle.
_READY = f"""(name) => {{
    const nb = {_CURRENT};
    return !!(nb && nb.context && nb.context.path === name && nb.sessionContext.session
              && nb.sessionContext.session.kernel && nb.sessionContext.session.kernel.status === 'idle');
}}"""

# Clears outputs, then runs every cell as Run > Run All Cells does; records when the last output arrived.
_RUN_ALL = f"""async () => {{
    const app = window.jupyterapp, nb = {_CURRENT};
    const kernel = nb.sessionContext.session.kernel;
    await app.commands.execute('notebook:clear-all-cell-outputs');
    window.__run = {{start: performance.now(), lastOutput: null}};
    kernel.iopubMessage.connect((_k, msg) => {{
        if (['stream', 'display_data', 'execute_result', 'error', 'update_display_data'].includes(msg.header.msg_type))
            window.__run.lastOutput = performance.now();
    }});
    await app.commands.execute('notebook:run-all-cells');
}}"""

# Done: the kernel is idle, no cell is queued or running, and every code cell ran -- or one of them failed (Run All
# then stops, and the cells after it never run: the test fails at once on the error instead of at the timeout).
_DONE = f"""() => {{
    const nb = {_CURRENT};
    const cells = nb.content.widgets.filter(c => c.model.type === 'code');
    const failed = cells.some(c => {{
        const outputs = c.model.outputs;
        for (let i = 0; i < outputs.length; i++) if (outputs.get(i).toJSON().output_type === 'error') return true;
        return false;
    }});
    return nb.sessionContext.session.kernel.status === 'idle'
        && cells.every(c => c.promptNode.textContent.indexOf('*') < 0)
        && (failed || cells.every(c => c.model.executionCount !== null));
}}"""

# Every output of every code cell: its type, stream name, text (errors: name and value), widget model id.
_OUTPUTS = f"""() => {{
    const nb = {_CURRENT};
    const result = [];
    nb.content.widgets.forEach((cell, index) => {{
        if (cell.model.type !== 'code') return;
        const outputs = cell.model.outputs;
        for (let i = 0; i < outputs.length; i++) {{
            const o = outputs.get(i).toJSON();
            const widget = o.data && o.data['application/vnd.jupyter.widget-view+json'];
            result.push({{cell: index, type: o.output_type, name: o.name || null,
                          text: o.output_type === 'error' ? o.ename + ': ' + o.evalue : (o.text || ''),
                          model_id: widget ? widget.model_id : null}});
        }}
    }});
    return result;
}}"""

# What the page rendered, per kind of view, inside the notebook's output areas.
_RENDERED = """() => {
    const area = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
    const plotly = [...area.querySelectorAll('.js-plotly-plot')].filter(el => el.querySelector('.main-svg') && el._fullLayout);
    const bokeh = [...area.querySelectorAll('.explorer-bokeh')].filter(el => el.dataset.rendered && !el.dataset.error && el.__bokeh);
    return {plotly: plotly.length, bokeh: bokeh.length,
            bokeh_failed: [...area.querySelectorAll('.explorer-bokeh[data-error]')].map(el => el.dataset.error),
            error_boxes: [...area.querySelectorAll('.jp-OutputArea-output')].map(el => el.innerText)
                .filter(t => t.includes('Error displaying widget') || t.includes('javascript error')).length};
}"""

# Kernel side: every DOM widget under the displayed roots (``IDS``), counted by class name.
_KERNEL_COUNT = """
import collections, json
from ipywidgets import DOMWidget
from ipywidgets.widgets.widget import _instances

def _walk(widget, seen):
    if id(widget) not in seen:
        seen.add(id(widget))
        yield widget
        for child in getattr(widget, "children", ()) or ():
            yield from _walk(child, seen)

_seen = set()
print(json.dumps(collections.Counter(type(w).__name__ for i in IDS for w in _walk(_instances[i], _seen)
                                     if isinstance(w, DOMWidget))))
"""

# Run code in the notebook's kernel without touching the notebook; resolves to its stdout.
_KERNEL_EXEC = f"""async (code) => {{
    const kernel = {_CURRENT}.sessionContext.session.kernel;
    const future = kernel.requestExecute({{code, silent: false, store_history: false}});
    let out = '', err = '';
    future.onIOPub = (msg) => {{
        if (msg.header.msg_type === 'stream') out += msg.content.text;
        if (msg.header.msg_type === 'error') err += msg.content.ename + ': ' + msg.content.evalue;
    }};
    await future.done;
    return [out, err];
}}"""

# Layout: each figure and control inside its output area, and no two titles (figure and subplot titles) overlapping.
LAYOUT = """(scope) => {
    const problems = [];
    const areas = document.querySelectorAll(scope);
    const box = (el) => el.getBoundingClientRect();
    const label = (el) => (el.closest('[class*="-figure"], [class*="attn-"], .explorer-bokeh') || el).className
        .toString().split(' ').filter(c => /-(figure|heatmap|stats|histogram|model-view|head-view)$|^explorer-bokeh$/.test(c)).join('.') || el.tagName;
    for (const area of areas) {
        const outer = box(area);
        if (outer.width === 0) continue;
        const figures = [...area.querySelectorAll('.js-plotly-plot .main-svg:first-of-type'),
                         ...[...area.querySelectorAll('.explorer-bokeh')].map(el => el.firstElementChild).filter(Boolean)];
        for (const fig of figures) {
            const r = box(fig);
            if (r.width === 0) continue;
            if (r.right > outer.right + 1 || r.left < outer.left - 1)
                problems.push(`${label(fig)}: spans x ${r.left.toFixed(0)}..${r.right.toFixed(0)}, ` +
                              `its output area ${outer.left.toFixed(0)}..${outer.right.toFixed(0)}`);
        }
        const controls = [...area.querySelectorAll('[class*="widget-"]')]
            .filter(el => !el.closest('.js-plotly-plot, .explorer-bokeh'));
        for (const el of controls) {
            const r = box(el);
            if (r.width > 0 && (r.right > outer.right + 1 || r.left < outer.left - 1))
                problems.push(`widget ${[...el.classList].filter(c => c.startsWith('widget-') || /-(app|text|figure)$/.test(c)).join('.')}: ` +
                              `spans x ${r.left.toFixed(0)}..${r.right.toFixed(0)}, its output area ${outer.left.toFixed(0)}..${outer.right.toFixed(0)}`);
        }
        const titles = [...area.querySelectorAll('.js-plotly-plot .gtitle, .js-plotly-plot .infolayer .annotation-text')]
            .map(el => [el, box(el)]).filter(([, r]) => r.width > 0);
        for (let i = 0; i < titles.length; i++) for (let j = i + 1; j < titles.length; j++) {
            const [a, ra] = titles[i], [b, rb] = titles[j];
            if (ra.left < rb.right - 1 && rb.left < ra.right - 1 && ra.top < rb.bottom - 1 && rb.top < ra.bottom - 1)
                problems.push(`titles overlap in ${label(a)}: "${a.textContent}" and "${b.textContent}"`);
        }
    }
    return problems;
}"""


@dataclass
class LabNotebook:
    """One notebook open in a fresh browser context and workspace, all cells run."""

    name: str
    page: object
    context: object
    errors: list = field(default_factory=list)           # page errors and console errors
    failed_requests: list = field(default_factory=list)
    slow_inits: int = 0                                  # anywidget's "failed to initialize" (see conftest)
    run_seconds: float = float("nan")                    # Run All to the kernel's last output

    def outputs(self) -> list[dict]:
        return self.page.evaluate(_OUTPUTS)

    def kernel(self, code: str) -> str:
        out, err = self.page.evaluate(_KERNEL_EXEC, code)
        if err:
            raise AssertionError(f"kernel code failed: {err}")
        return out

    def displayed_widgets(self) -> Counter:
        """Widgets the kernel displayed (the roots in the outputs and every widget under them), by class name:
        ``PlotView`` (plotly), ``BokehWidget``, ``HBox``, ``Dropdown``, ..."""
        ids = [o["model_id"] for o in self.outputs() if o["model_id"]]
        return Counter(json.loads(self.kernel(_KERNEL_COUNT.replace("IDS", repr(ids))).strip().splitlines()[-1]))

    def rendered(self) -> dict:
        return self.page.evaluate(_RENDERED)

    def layout_problems(self) -> list[str]:
        return layout_problems(self.page, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")

    def unexpected_failed_requests(self) -> list[str]:
        return [url for url in self.failed_requests if not url.startswith(LAB_KNOWN_OFFLINE)]

    def run_all(self, timeout: float = 600_000) -> float:
        """Run > Run All Cells; wait until every code cell ran and the kernel is idle; seconds to the last output."""
        self.page.evaluate(_RUN_ALL)
        self.page.wait_for_function(_DONE, timeout=timeout, polling=250)
        run = self.page.evaluate("() => window.__run")
        self.run_seconds = ((run["lastOutput"] or run["start"]) - run["start"]) / 1000
        return self.run_seconds

    def close(self) -> None:
        self.context.close()


def layout_problems(page, scope: str = ".jp-OutputArea-output") -> list[str]:
    """Figures or controls wider than their output area (``scope`` selects the areas), and overlapping titles, as
    sentences; empty when the layout fits. Hidden elements (zero width, e.g. other dashboard tabs) are skipped."""
    return page.evaluate(LAYOUT, scope)


def open_notebook(browser, server, name: str, width: int = 1280, height: int = 1000) -> LabNotebook:
    """Open ``name`` in a new browser context (a fresh profile) on a fresh workspace; wait for an idle kernel."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    nb = LabNotebook(name=name, page=page, context=context)

    def on_pageerror(exc) -> None:
        if str(exc).startswith(SLOW_INIT):
            nb.slow_inits += 1
        else:
            nb.errors.append(f"pageerror: {exc}")

    page.on("pageerror", on_pageerror)
    page.on("requestfailed", lambda request: nb.failed_requests.append(request.url))
    # "Failed to load resource" console errors are checked through failed_requests (LAB_KNOWN_OFFLINE)
    page.on("console", lambda msg: msg.type == "error" and not msg.text.startswith("Failed to load resource")
            and nb.errors.append(f"console: {msg.text}"))
    page.goto(server.notebook_url(name))
    page.wait_for_function(_READY, arg=name, timeout=120_000, polling=250)
    return nb


def wait_rendered(nb: LabNotebook, expected: Counter, timeout: float = 60.0) -> dict:
    """Poll until the page has rendered as many plotly and bokeh views as the kernel displayed (``expected``,
    from :meth:`LabNotebook.displayed_widgets`); return the page's last count."""
    deadline = time.monotonic() + timeout
    while True:
        seen = nb.rendered()
        if ((seen["plotly"] >= expected["PlotView"] and seen["bokeh"] >= expected["BokehWidget"])
                or time.monotonic() > deadline):
            return seen
        nb.page.wait_for_timeout(250)


@contextmanager
def app_notebook(browser, app: str, name: str, ready: str, label: str, width: int = 1280,
                 server=None) -> Iterator[LabNotebook]:
    """One scratch notebook ``name`` whose only cell displays ``app = explorer.apps.<app>()``, opened at ``width``
    (a fresh browser context, fresh workspace, fresh kernel) and run; yields once ``ready`` (a selector) is visible;
    the page and its kernel are always closed. ``server``: the session's JupyterLab (the ``lab`` fixture), else a
    fresh one started and stopped here. Timings go to ``TIMINGS`` under ``"<label> (lab): ..."``."""
    from tests.browser.conftest import TIMINGS
    from tests.browser.lab_server import lab_server

    with (nullcontext(server) if server is not None else lab_server()) as server:
        server.shutdown_kernels()
        cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                "source": [f"from explorer.apps import {app}\n", f"app = {app}()\n", "app"]}
        notebook = {"cells": [cell], "nbformat": 4, "nbformat_minor": 5,
                    "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                                "name": "python3"}}}
        (server.root / name).write_text(json.dumps(notebook))
        start = time.perf_counter()
        nb = open_notebook(browser, server, name, width=width)
        TIMINGS[f"{label} (lab): open to idle kernel (s)"] = time.perf_counter() - start
        try:
            nb.run_all(timeout=120_000)
            nb.page.wait_for_selector(f"{ready} .main-svg", state="visible", timeout=60_000)
            TIMINGS[f"{label} (lab): Run All to last output (s)"] = nb.run_seconds
            yield nb
        finally:
            nb.close()
            server.shutdown_kernels()
