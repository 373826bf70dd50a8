"""``python -m explorer.bench.first_drawing``: the attention app's first drawing beside bertviz's, in one JupyterLab.

What it measures
----------------
One JupyterLab (loopback, token off, scratch folders) and one headless Chromium. A generated notebook holds a set-up
cell and then, per repeat, two measured cells in alternating order:

* **ours**: ``AttentionMapsApp(text=TEXT)`` (runs MiniLM on the text and displays the app, which draws its head view
  first and the other figures right after);
* **bertviz**: the same MiniLM through ``transformers`` (``output_attentions=True``) and ``bertviz.head_view`` of its
  attentions and tokens, as bertviz's README does it.

A sample is the time from the page's ``notebook:run-cell`` command to the first animation frame at which the head
view is in the cell's output (checked on every frame): for ours, the head view's bokeh element marked rendered (``data-rendered``) and every BokehJS view of it
finished (``has_finished()``: drawn at least once);
for bertviz, its SVG holding a text element per token on both sides. Both sides include their model run; the set-up
cell loads both models and runs each once, so neither pays for loading. The first cell of each kind also loads its
page-side library (BokehJS from the kernel; require.js, d3 and jQuery): it is reported apart ("first in the page"),
and the median of the others beside it. Before each measured cell the kernel is idle and has been for a second (our
app's later figures are done).

bertviz fetches require.js, d3 5.7.0 and jQuery 2.0.0 from cdnjs. Offline, the browser is given them from
``--bertviz``'s ``js`` folder for those URLs (``make bench-bertviz`` fills it from npm: require.js 2.3.6, d3 5.7.0,
jQuery 2.1.0, the oldest 2.x on npm) and every other request off the loopback is refused. bertviz itself (1.4.1,
``head_view`` needs only torch and IPython) is installed without its dependencies in ``--bertviz``'s ``python``
folder, outside the project's environment.

Usage: ``make bench-bertviz`` (fetches bertviz and the scripts into ``.bench/bertviz``, then runs this), or
``python -m explorer.bench.first_drawing --bertviz .bench/bertviz [--tokens 32 128] [--repeats 5]``.
Writes ``assets/benchmarks/first_drawing_cpu.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from explorer.bench.common import write_json
from explorer.bench.dashboard_load.common import CHROMIUM_ARGS, NOT_LOOPBACK, free_port, machine_metadata

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "assets" / "benchmarks" / "first_drawing_cpu.json"
KINDS = ("ours", "bertviz")
# bertviz 1.4.1's script URLs (head_view.py, head_view.js) -> the file in --bertviz/js that answers each
CDN = {
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js": "require.js",
    "https://cdnjs.cloudflare.com/ajax/libs/d3/5.7.0/d3.min.js": "d3.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/jquery/2.0.0/jquery.min.js": "jquery.min.js",
}
# words that are one WordPiece each in MiniLM's vocabulary (checked by compose_text)
WORDS = ("the animal did not cross the street because it was too tired and the road was wide so the dog sat "
         "by the house while a man walked to the park with his small child on a long summer day").split()

SETUP = """\
import sys
sys.path.insert(0, {python!r})  # bertviz 1.4.1, installed without its dependencies
import torch
import transformers
from bertviz import head_view
from explorer.apps.attention_maps import AttentionMapsApp
from explorer.models.checkpoint import default_checkpoint_dir, load_pretrained

TEXT = {text!r}
tokenizer = transformers.BertTokenizerFast.from_pretrained(default_checkpoint_dir())
bert = transformers.BertModel.from_pretrained(default_checkpoint_dir(), attn_implementation="eager").eval()
load_pretrained()  # the app's model (cached: the app uses this one)
with torch.no_grad():
    bert(**tokenizer(TEXT, return_tensors="pt"), output_attentions=True)
AttentionMapsApp(text=TEXT)  # built once, not shown: Python-side warm-up only
print(len(tokenizer(TEXT)["input_ids"]), "tokens")
"""
CELLS = {
    "ours": "AttentionMapsApp(text=TEXT)",
    "bertviz": ("with torch.no_grad():\n"
                "    inputs = tokenizer(TEXT, return_tensors=\"pt\")\n"
                "    outputs = bert(**inputs, output_attentions=True)\n"
                "head_view(outputs.attentions, tokenizer.convert_ids_to_tokens(inputs[\"input_ids\"][0]))"),
}

# the notebook panel is open, its kernel idle
READY_JS = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return Boolean(k && k.status === "idle" && w.content && w.content.widgets.length > 1);
}"""
IDLE_JS = """(index) => {
  const w = window.jupyterapp.shell.currentWidget;
  const cell = w.content.widgets[index];
  return w.sessionContext.session.kernel.status === "idle" && cell.model.executionCount !== null;
}"""
# run cell ``index``; resolve with ms from the run command to the first frame after its head view is drawn
MEASURE_JS = """async ([index, kind, tokens, timeoutMs]) => {
  const w = window.jupyterapp.shell.currentWidget;
  const nb = w.content;
  nb.activeCellIndex = index;
  const out = nb.widgets[index].outputArea.node;
  const drawn = kind === "ours"
    ? () => { const v = out.querySelector(".attn-head-view[data-rendered], .attn-head-view [data-rendered]");
              return Boolean(v && v.__bokeh && [...v.__bokeh.views].every((view) => view.has_finished())); }
    : () => { const svg = out.querySelector('[id^="bertviz-"] svg');
              return Boolean(svg && svg.querySelectorAll("text").length >= 2 * tokens); };
  // checked on every animation frame (BokehJS finishing a view changes no DOM a MutationObserver would see)
  return await new Promise((resolve) => {
    const t0 = performance.now();
    const frame = () => {
      const now = performance.now() - t0;
      if (drawn()) resolve(now);
      else if (now > timeoutMs) resolve(null);
      else requestAnimationFrame(frame);
    };
    window.jupyterapp.commands.execute("notebook:run-cell");
    requestAnimationFrame(frame);
  });
}"""


def compose_text(tokenizer, n_tokens: int) -> str:
    """A text of exactly ``n_tokens`` MiniLM tokens ([CLS] and [SEP] included), words from :data:`WORDS` in turn."""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int):
        raise TypeError(f"n_tokens must be an int, got {type(n_tokens).__name__}")
    if not 3 <= n_tokens <= 512:
        raise ValueError(f"n_tokens must be in [3, 512], got {n_tokens}")
    words = [WORDS[i % len(WORDS)] for i in range(n_tokens - 2)]
    text = " ".join(words)
    count = len(tokenizer(text)["input_ids"])
    if count != n_tokens:
        raise ValueError(f"the composed text has {count} tokens, not {n_tokens}: a word is not a single WordPiece")
    return text


def order(repeats: int) -> list[str]:
    """Measured cells, alternating which side goes first: ours, bertviz, bertviz, ours, ours, bertviz, ..."""
    cells: list[str] = []
    for r in range(repeats):
        cells += list(KINDS) if r % 2 == 0 else list(reversed(KINDS))
    return cells


def notebook(text: str, python_dir: Path, kinds: Sequence[str]) -> dict:
    """The generated notebook: the set-up cell, then one cell per entry of ``kinds``."""
    def cell(source: str) -> dict:
        return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}

    return {"cells": [cell(SETUP.format(python=str(python_dir), text=text))] + [cell(CELLS[k]) for k in kinds],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def summary(samples: Sequence[float | None]) -> dict:
    """First sample apart (it loads the page-side library); median, min and max of the others (None: no drawing)."""
    rest = [s for s in samples[1:] if s is not None]
    return {"first_s": samples[0] if samples else None, "samples_s": list(samples),
            "median_s": statistics.median(rest) if rest else None, "min_s": min(rest) if rest else None,
            "max_s": max(rest) if rest else None, "failed": sum(s is None for s in samples)}


@contextlib.contextmanager
def jupyter_lab(folder: Path, timeout: float = 120.0) -> Iterator[str]:
    """JupyterLab on a free loopback port over ``folder`` (scratch settings, runtime and workspaces); yields its
    URL; always stopped."""
    scratch = Path(tempfile.mkdtemp(prefix="first-drawing-lab-"))
    settings = scratch / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"windowingMode": "none"}))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"), "JUPYTER_CONFIG_DIR": str(scratch / "config"),
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = open(scratch / "lab.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
         "--ServerApp.password=", "--allow-root", f"--ServerApp.root_dir={folder}",
         f"--LabApp.user_settings_dir={scratch / 'settings'}", f"--LabApp.workspaces_dir={scratch / 'workspaces'}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.news_url=None"], cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True)
    try:
        limit = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited:\n{(scratch / 'lab.log').read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "api/status", timeout=2).close()
                break
            if time.monotonic() > limit:
                raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)  # the server shuts its kernels down
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _route_scripts(context, js_dir: Path) -> None:
    def answer(route) -> None:
        name = CDN.get(route.request.url)
        if name is None:
            route.abort()
        else:
            route.fulfill(status=200, content_type="application/javascript", body=(js_dir / name).read_bytes())

    context.route(NOT_LOOPBACK, answer)


def measure_length(browser, url: str, folder: Path, js_dir: Path, python_dir: Path, text: str, n_tokens: int,
                   repeats: int, timeout: float) -> dict:
    """One notebook, one page: the set-up cell, then the measured cells of :func:`order`."""
    kinds = order(repeats)
    name = f"first_drawing_{n_tokens}.ipynb"
    (folder / name).write_text(json.dumps(notebook(text, python_dir, kinds), indent=1))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    try:
        _route_scripts(context, js_dir)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)[:300]))
        page.goto(f"{url}lab/workspaces/fd{n_tokens}/tree/{name}", timeout=timeout * 1e3)
        page.wait_for_function(READY_JS, timeout=timeout * 1e3, polling=250)
        page.evaluate("() => { const w = window.jupyterapp.shell.currentWidget; w.content.activeCellIndex = 0; }")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
        page.wait_for_function(IDLE_JS, arg=0, timeout=timeout * 1e3, polling=250)
        setup_output = page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.widgets[0].outputArea.node.innerText")
        samples: dict[str, list[float | None]] = {kind: [] for kind in KINDS}
        for index, kind in enumerate(kinds, start=1):
            page.wait_for_timeout(1000)  # the kernel has been idle for a second (the app's later figures are done)
            ms = page.evaluate(MEASURE_JS, [index, kind, n_tokens, timeout * 1e3])
            samples[kind].append(None if ms is None else ms / 1e3)
            page.wait_for_function(IDLE_JS, arg=index, timeout=timeout * 1e3, polling=100)
        return {"tokens": n_tokens, "text": text, "setup_output": setup_output.strip(), "order": kinds,
                **{kind: summary(values) for kind, values in samples.items()}, "page_errors": errors}
    finally:
        context.close()


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    from playwright.sync_api import sync_playwright
    from transformers import BertTokenizerFast

    from explorer.models.checkpoint import default_checkpoint_dir

    bertviz = Path(args.bertviz).resolve()
    python_dir, js_dir = bertviz / "python", bertviz / "js"
    missing = [str(p) for p in [python_dir / "bertviz" / "head_view.py", *(js_dir / n for n in CDN.values())]
               if not p.exists()]
    if missing:
        raise FileNotFoundError(f"--bertviz {args.bertviz} lacks {', '.join(missing)}: run 'make bench-bertviz'")
    tokenizer = BertTokenizerFast.from_pretrained(default_checkpoint_dir())
    texts = {n: compose_text(tokenizer, n) for n in args.tokens}
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    folder = Path(tempfile.mkdtemp(prefix="first-drawing-"))
    try:
        with jupyter_lab(folder) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                lengths = [measure_length(browser, url, folder, js_dir, python_dir, texts[n], n, args.repeats,
                                          args.timeout) for n in args.tokens]
                version = browser.version
            finally:
                browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    meta = machine_metadata(argv, chromium=version, bertviz="1.4.1",
                            scripts={"require.js": "2.3.6 (npm requirejs)", "d3": "5.7.0 (npm)",
                                     "jquery": "2.1.0 (npm; bertviz asks for 2.0.0, not on npm)"},
                            measure="notebook:run-cell command -> first animation frame at which the head view is in "
                                    "the cell's output (ours: bokeh views rendered and finished; bertviz: SVG with "
                                    "a text per token on both sides); both sides run the model in the cell",
                            repeats=args.repeats)
    return {"metadata": meta, "lengths": lengths}


def table(result: dict) -> str:
    lines = [f"{'tokens':>6} {'side':<8} {'first in page s':>15} {'median s':>9} {'min s':>7} {'max s':>7} "
             f"{'failed':>6}"]
    for length in result["lengths"]:
        for kind in KINDS:
            s = length[kind]
            cells = [f"{v:.3f}" if v is not None else "-" for v in (s["first_s"], s["median_s"], s["min_s"],
                                                                      s["max_s"])]
            lines.append(f"{length['tokens']:>6} {kind:<8} {cells[0]:>15} {cells[1]:>9} {cells[2]:>7} "
                         f"{cells[3]:>7} {s['failed']:>6}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer.bench.first_drawing", description=__doc__.split("\n")[0])
    parser.add_argument("--bertviz", required=True, help="folder with python/bertviz and js/ (make bench-bertviz)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[32], help="text lengths in tokens (3..512)")
    parser.add_argument("--repeats", type=int, default=5, help="measured cells per side and length (2..50)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one cell may take")
    parser.add_argument("--out", default=str(OUT))
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if not 2 <= args.repeats <= 50:
        raise ValueError(f"--repeats must be in [2, 50], got {args.repeats}")
    for n in args.tokens:
        if not 3 <= n <= 512:
            raise ValueError(f"--tokens must be in [3, 512], got {n}")
    if args.timeout <= 0:
        raise ValueError(f"--timeout must be positive, got {args.timeout}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ValueError as error:
        build_parser().error(str(error))
    result = run(args, argv)
    print(table(result))
    print(f"wrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
