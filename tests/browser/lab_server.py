"""Start JupyterLab on a free loopback port over a scratch copy of the notebooks, and drive notebooks in it.

The server is the project's own JupyterLab (``.venv``), configured for the test only:
- token, password and XSRF check off (the test deletes kernels over the REST API), ``--allow-root`` (root is the normal user in containers), loopback only;
- a scratch root directory holding a copy of ``notebooks/`` (Lab autosaves what it runs: the repository's
  notebooks must keep their small reviewed outputs), and scratch settings, workspaces and runtime folders, so every
  run starts like a fresh install and no user's settings leak in;
- **windowing off** (``windowingMode: "none"``, a user setting of the notebook tracker): JupyterLab 4 otherwise
  defers or skips rendering cells out of view, and the tests measure every output's layout. The default mode
  (``contentVisibility``) still renders every cell; the test server attaches and lays out every cell as well;
- ``window.jupyterapp`` exposed (``--LabApp.expose_app_in_browser``) so a test runs the same commands as the menus
  ("Run All Cells" is ``notebook:run-all-cells``) and reads the notebook model;
- no update or news checks (they would reach the network).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.browser.dashboard_server import NOTEBOOKS, free_port, stop, wait_until_up

SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


@dataclass
class LabServer:
    url: str          # http://127.0.0.1:PORT/
    root: Path        # the scratch copy of notebooks/ the server serves

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(self.url + path.lstrip("/"), method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every session and kernel (a notebook opened next gets a fresh kernel)."""
        for session in self.api("api/sessions"):
            self.api(f"api/sessions/{session['id']}", method="DELETE")
        for kernel in self.api("api/kernels"):
            self.api(f"api/kernels/{kernel['id']}", method="DELETE")

    def notebook_url(self, name: str) -> str:
        """A fresh workspace for ``name``: no tabs restored from earlier runs."""
        return f"{self.url}lab/workspaces/t{uuid.uuid4().hex[:10]}/tree/{name}"


@contextlib.contextmanager
def lab_server(timeout: float = 120.0) -> Iterator[LabServer]:
    """Serve a scratch copy of ``notebooks/`` with JupyterLab; yield the server. Always shut down."""
    scratch = Path(tempfile.mkdtemp(prefix="explorer-lab-"))
    root = scratch / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = scratch / "settings"
    for name, values in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = free_port()
    jupyter = Path(sys.executable).with_name("jupyter")
    log_path = scratch / "lab.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"),
           "JUPYTER_CONFIG_DIR": str(scratch / "config")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
             "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
             "--allow-root",
             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
             f"--LabApp.workspaces_dir={scratch / 'workspaces'}", "--LabApp.expose_app_in_browser=True",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None"],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = LabServer(url=f"http://127.0.0.1:{port}/", root=root)
    try:
        wait_until_up(proc, lambda: server.api("api/status"), f"jupyter lab on {server.url}", log_path, timeout)
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.shutdown_kernels()
        stop(proc)
        shutil.rmtree(scratch, ignore_errors=True)
