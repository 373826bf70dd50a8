"""``make lab`` starts JupyterLab on the notebooks, lesson 01 first, also as root (the user in containers)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from explorer.bench.dashboard_load import free_port

ROOT = Path(__file__).resolve().parents[1]


def _serve(timeout: float = 90.0) -> str:
    """Run ``make lab``, wait until JupyterLab answers, stop it; return its output."""
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="make-lab-"))
    env = {**os.environ, "HOME": str(home), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "BROWSER": "true", "MAKEFLAGS": ""}
    log = home / "make-lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_PORT={port}"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as response:
                    assert response.status == 200
                break
            except (OSError, urllib.error.URLError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"make lab did not serve (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        return log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)


def test_make_lab_serves_the_first_lesson():
    # as root (the normal user in containers, and here) JupyterLab needs --allow-root, which the recipe adds for
    # uid 0 only; before, it exited at once ("Running as root is not recommended")
    output = _serve()
    assert "/lab/tree/01_receptive_fields.ipynb" in output  # the lesson to open first
    assert "Running as root is not recommended" not in output
