"""Start the Voila dashboard on a free local port and open it in headless Chromium (tests and screenshots)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from explorer.bench.dashboard_load import free_port  # one loopback free-port helper for tests and benchmarks

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_until_up(proc: subprocess.Popen, answers, what: str, log: Path, timeout: float) -> None:
    """Poll ``answers()`` (raises OSError while the server is not up) until it returns; fail early if ``proc``
    exits, with the end of its ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            answers()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not answer within {timeout:.0f} s") from None
            time.sleep(0.3)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate ``proc``; kill it if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def voila_server(notebook: str = "dashboard.ipynb", timeout: float = 120.0) -> Iterator[str]:
    """Serve ``notebooks/<notebook>`` with Voila (config from notebooks/voila.json); yield its URL."""
    port = free_port()
    voila = Path(sys.executable).with_name("voila")
    log = tempfile.NamedTemporaryFile("w+", prefix="voila-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [str(voila), notebook, "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"],
        cwd=NOTEBOOKS, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(proc, lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close(),
                      f"voila on {url}", Path(log.name), timeout)
        yield url
    finally:
        stop(proc, timeout=15)
        log.close()
        os.unlink(log.name)


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A Playwright Chromium browser (Debian's /usr/bin/chromium; Playwright cannot download one here)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"Chromium not found at {CHROMIUM}; run 'make browser' or set CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
