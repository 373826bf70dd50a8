"""JupyterHub for a class (``explorer/deploy/jupyterhub_config.py``), for real, on loopback.

The first two tests start the hub the way a teacher's own config file would (``load_subconfig`` of the deploy
config, then the test's additions: an API token, as a service with the scopes it reads and stops servers and mints
a student's token with; JupyterLab's app object exposed to the page, to run code in a kernel) from the project's
environment, with the real configurable-http-proxy that ``make hub-proxy`` installs into ``.venv/node``,
on free ports of 127.0.0.1, in a fresh temporary state directory, with the ``dummy`` (shared password) login.

``test_class_hub`` (one Unix user per student, the default; tests/browser/hub_env.py builds the students'
environment and removes the accounts afterwards): three students log in, each gets their own server (own process
running as their own account from the students' environment, own port, own 0700 home with own copies of nbgrader's
student copy of lesson 01 and of the dashboard, kernels on Unix sockets in their own runtime folder); ada opens the dashboard in Chromium through the proxy (websockets through CHP; the plot
renders), grace opens lesson 01 in JupyterLab in Chromium and her kernel runs under the enforced memory limits
(her own memory cgroup where the machine has one, and per process: an allocation past it is a ``MemoryError``, the
kernel survives), alan renders the dashboard over plain HTTP.
A student cannot reach another's server, with his cookies or his own API token; a server stopped through the API is
gone (process, kernels, route) while the others keep running; the idle culler runs as a hub service.
``test_idle_culler_stops_idle_server``: a second hub (``EXPLORER_HUB_ISOLATION=none``, one OS account for all) with
an 8-second cull timeout culls a server nobody uses.
``test_hub_refuses_unsafe_or_broken_settings``: the shared-password login off loopback, a missing proxy, a short
password, a missing or unsafe students' environment, a bad Unix name prefix stop the hub before it serves anything,
with a message saying what to fix. Hostile students: ``test_hub_hostile.py``.

The first two end by stopping the hub and asserting that no process it started (proxy, culler, servers, kernels) is left,
found by pid and start time; on any failure the same teardown kills what is left, the process groups last.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from explorer.classroom import release
from explorer.deploy.cgroups import memory_cgroups
from tests.browser.conftest import KNOWN_OFFLINE, SLOW_INIT, TIMINGS
from tests.browser.dashboard_server import NOTEBOOKS, ROOT, free_port, wait_until_up
from tests.browser.lab import _READY, LabNotebook

pytestmark = pytest.mark.browser

HUB_CONFIG = ROOT / "explorer" / "deploy" / "jupyterhub_config.py"
CHP = ROOT / ".venv" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
JUPYTERHUB = Path(sys.executable).with_name("jupyterhub")
PASSWORD = "class-" + secrets.token_hex(8)
ADMIN_PASSWORD = "teachers-" + secrets.token_hex(16)  # teachers (hub admins) log in with their own, 32+ characters
FIRST_LESSON = "01_receptive_fields.ipynb"
PLOT = ".rf-figure.js-plotly-plot .main-svg"
CLASS_DASHBOARD_LINK = "/hub/user-redirect/voila/render/dashboard.ipynb"  # the link a teacher hands out
ARTIFACTS = ROOT / "tests" / "browser" / "_artifacts"
# What the dashboard page must not load: notebooks/voila.json's denylist, and in any case the two lab extensions
# nbgrader installs (in Voilà's page they fail to start, with console errors), should they leave that list.
DENIED_EXTENSIONS = set(json.loads((NOTEBOOKS / "voila.json").read_text())["VoilaConfiguration"]["extension_denylist"]
                        ) | {"@jupyter/nbgrader", "@jupyter-notebook/lab-extension"}

# The test's own config file: the deploy config as a teacher's file loads it, plus the test's API access.
TEST_CONFIG = """
import os
load_subconfig({config!r})
c.JupyterHub.services.append({{"name": "hub-test", "api_token": os.environ["HUB_TEST_TOKEN"]}})
c.JupyterHub.load_roles.append({{
    "name": "hub-test",
    "scopes": ["list:users", "read:users", "admin:users", "read:servers", "admin:server_state", "servers", "list:services",
               "read:services", "proxy", "tokens"],
    "services": ["hub-test"],
}})
# JupyterLab exposes its app object, so the test runs code in a student's kernel as the menus do (tests/browser/lab.py)
c.Spawner.args.append("--LabApp.expose_app_in_browser=True")
"""


@dataclass
class Hub:
    """A running hub: its public URL, the test's API token, and every process seen under it (pid -> start time)."""

    url: str
    token: str
    proc: subprocess.Popen
    state: Path
    log: Path
    tree: dict[int, float] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)   # processes still alive after shutdown (then killed)
    startup_s: float = float("nan")
    shutdown_s: float = float("nan")
    homes: Path | None = None   # users mode: the homes folder (<homes>/<prefix><name>)
    student_env: Path | None = None  # users mode: the students' environment
    prefix: str = ""            # users mode: the Unix name prefix

    def home(self, user: str) -> Path:
        """The user's home: ``<homes>/<prefix><user>`` with one account per student, else ``<state>/homes/<user>``."""
        return self.homes / f"{self.prefix}{user}" if self.homes else self.state / "homes" / user

    def api(self, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, object]:
        """Call the hub's REST API as the test service; (status, parsed JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}hub/api/{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        try:
            return status, (json.loads(raw) if raw.strip() else None)
        except ValueError:  # not the hub answering (the proxy's "Not Found" before the hub's route is added)
            return status, raw.decode(errors="replace")

    def server(self, user: str) -> dict | None:
        """The user's default server model from the API (with ``state.pid``), or None when they have none."""
        status, model = self.api(f"users/{user}")
        assert status == 200, (status, model)
        return model["servers"].get("")

    def wait_ready(self, user: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.server(user)
            if server and server["ready"]:
                self.remember_tree()
                return server
            time.sleep(0.25)
        raise TimeoutError(f"{user}'s server not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def remember_tree(self) -> None:
        """Record every process now under the hub (servers and proxy are its children, kernels theirs)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for proc in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.tree[proc.pid] = proc.create_time()

    def alive(self) -> list[psutil.Process]:
        """Recorded processes still running (the same process: pid and start time match; zombies count as gone)."""
        result = []
        for pid, started in self.tree.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                    result.append(proc)
        return result

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _shut_down(hub: Hub, timeout: float = 60) -> None:
    """SIGTERM the hub (it stops the servers, the culler and the proxy), then wait for every recorded process to
    exit. Whatever is still alive is listed in ``hub.leftovers`` and killed: each recorded process and its process
    group (servers, proxy and kernels each run in their own session), the hub's group last."""
    hub.remember_tree()
    start = time.perf_counter()
    if hub.proc.poll() is None:
        hub.proc.send_signal(signal.SIGTERM)
        try:
            hub.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            hub.leftovers.append(f"jupyterhub (pid {hub.proc.pid}) still running {timeout:.0f} s after SIGTERM")
    deadline = time.monotonic() + 10
    while hub.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    hub.shutdown_s = time.perf_counter() - start
    own_group = os.getpgid(0)
    for proc in hub.alive():
        with contextlib.suppress(psutil.NoSuchProcess):
            hub.leftovers.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:160]}")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(proc.pid) != own_group:  # never pytest's own group
                    os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            proc.kill()
    if hub.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(hub.proc.pid, signal.SIGKILL)
        hub.proc.wait(timeout=10)


@contextlib.contextmanager
def running_hub(log_name: str, users: tuple[str, ...], timeout: float = 90, class_env=None, **env: str
                ) -> Iterator[Hub]:
    """Start the hub for ``users`` on free loopback ports in a fresh state directory; always stop it (see
    :func:`_shut_down`), keep its log as ``_artifacts/hub-<log_name>.log`` and remove the directory. With
    ``class_env`` (tests/browser/hub_env.py) each student is their own Unix user; without, the hub runs with
    ``EXPLORER_HUB_ISOLATION=none``. ``env``: extra ``EXPLORER_HUB_*`` settings."""
    if not CHP.exists():
        pytest.fail(f"configurable-http-proxy is missing at {CHP}: run 'make hub-proxy' (or 'make setup')")
    scratch = Path(tempfile.mkdtemp(prefix="explorer-hub-"))
    config = scratch / "test_config.py"
    config.write_text(TEST_CONFIG.format(config=str(HUB_CONFIG)))
    port, api_port, internal_port = _distinct_free_ports(3)
    env = {key: value.format(port=port) for key, value in env.items()}  # e.g. a subdomain host naming the port
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "HUB_TEST_TOKEN": secrets.token_hex(32),
                   "EXPLORER_HUB_AUTH": "dummy", "EXPLORER_HUB_USERS": " ".join(users),
                   "EXPLORER_HUB_PASSWORD": PASSWORD, "EXPLORER_HUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
                   "EXPLORER_HUB_IP": "127.0.0.1", "EXPLORER_HUB_PORT": str(port), "EXPLORER_HUB_PROXY_API_PORT": str(api_port),
                   "EXPLORER_HUB_INTERNAL_PORT": str(internal_port), "EXPLORER_HUB_STATE_DIR": str(scratch / "state"),
                   **(class_env.hub_settings(log_name) if class_env else {"EXPLORER_HUB_ISOLATION": "none"}),
                   **env}
    try:
        with served_hub(config, environment, log_name, timeout,
                        homes=Path(environment["EXPLORER_HUB_HOMES"]) if class_env else None,
                        prefix=class_env.user_prefix(log_name) if class_env else "",
                        student_env=class_env.env if class_env else None) as hub:
            yield hub
    finally:
        if class_env:
            class_env.remove_cgroups(log_name)


@contextlib.contextmanager
def served_hub(config: Path, environment: dict[str, str], log_name: str, timeout: float = 90, **fields
               ) -> Iterator[Hub]:
    """Run ``jupyterhub -f config`` (in ``config``'s folder, a scratch folder of its own) with ``environment``, which
    names the ports, the state folder and ``HUB_TEST_TOKEN``; yield the :class:`Hub` once its API answers the
    test's token. Always: stop it (:func:`_shut_down`), keep its log as ``_artifacts/hub-<log_name>.log`` and remove
    the scratch folder. ``fields``: more :class:`Hub` fields."""
    scratch = config.parent
    log = scratch / "hub.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        # its own session: the last-resort kill of its process group cannot reach pytest
        proc = subprocess.Popen([str(JUPYTERHUB), "-f", str(config)], cwd=scratch, stdout=out,
                                stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    hub = Hub(url=f"http://127.0.0.1:{environment['EXPLORER_HUB_PORT']}/", token=environment["HUB_TEST_TOKEN"],
              proc=proc, state=Path(environment["EXPLORER_HUB_STATE_DIR"]), log=log, **fields)
    try:
        def answers() -> None:
            """Up = the proxy routes to the hub and the hub answers the test's token (OSError until then)."""
            status, _ = hub.api("")
            if status != 200:
                raise OSError(f"hub API answered {status}")

        wait_until_up(proc, answers, f"jupyterhub on {hub.url}", log, timeout)
        hub.startup_s = time.perf_counter() - start
        hub.remember_tree()
        yield hub
    finally:
        try:
            _shut_down(hub)
        finally:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copyfile(log, ARTIFACTS / f"hub-{log_name}.log")
            shutil.rmtree(scratch, ignore_errors=True)


# --- students -----------------------------------------------------------------------------------------------
def _collect_errors(page) -> list[str]:
    """Page errors and console errors, as the Voilà fixture collects them (anywidget's slow-init rejection and
    "Failed to load resource" are checked elsewhere); failed request URLs go to ``page.failed_requests``."""
    errors: list[str] = []
    page.failed_requests = []
    page.on("pageerror", lambda exc: str(exc).startswith(SLOW_INIT) or errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and not msg.text.startswith("Failed to load resource")
            and errors.append(f"console: {msg.text}"))
    page.on("requestfailed", lambda request: page.failed_requests.append(request.url))
    return errors


def login_in_browser(browser, hub: Hub, user: str, next_path: str | None = None, password: str = PASSWORD):
    """Log ``user`` in through the hub's real login form (XSRF token and all) in a fresh browser context, asking
    for ``next_path`` (None: the hub's home, which spawns their server and opens its default URL). Returns
    (context, page, errors)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = _collect_errors(page)
    page.goto(f"{hub.url}hub/login" + (f"?next={urllib.parse.quote(next_path)}" if next_path else ""))
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("input[type=submit], button[type=submit]")
    return context, page, errors


def login_over_http(browser, hub: Hub, user: str, password: str = PASSWORD):
    """Log ``user`` in with plain HTTP (a browser context used only for its cookie jar, no page): GET the form,
    POST it with its ``_xsrf`` field. Returns the context; its ``request`` carries the login cookie."""
    context = browser.new_context()
    form = context.request.get(f"{hub.url}hub/login")
    assert form.status == 200, form.status
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', form.text())
    assert xsrf, "no _xsrf field in the hub's login form"
    answer = context.request.post(f"{hub.url}hub/login", form={"username": user, "password": password,
                                                               "_xsrf": xsrf.group(1)}, max_redirects=0)
    assert answer.status == 302, (answer.status, answer.text()[:500])
    # the hub's landing page spawns the server (no options form), then waits for it
    context.request.get(f"{hub.url}hub/spawn", timeout=120_000)
    return context


def check_own_server(hub: Hub, request, user: str, lessons: Path) -> dict:
    """The user's server as the hub API reports it, its process (pid, port), and their own files through it: the
    student copy of lesson 01 from ``lessons`` (no solution in it) and the dashboard."""
    server = hub.server(user)
    assert server and server["ready"] and server["url"] == f"/user/{user}/", server
    pid = server["state"]["pid"]
    proc = psutil.Process(pid)
    assert "jupyterhub-singleuser" in " ".join(proc.cmdline()), proc.cmdline()
    ports = {conn.laddr.port for conn in proc.net_connections(kind="tcp") if conn.status == psutil.CONN_LISTEN}
    assert ports, f"{user}'s server (pid {pid}) listens on no TCP port"
    home = hub.home(user)
    assert proc.cwd() == str(home)
    if hub.homes:
        # one Unix account per student: the server runs as it, from the students' environment, in a 0700 home
        account = pwd.getpwnam(f"{hub.prefix}{user}")
        assert proc.uids().real == proc.uids().effective == account.pw_uid != 0, (proc.uids(), account)
        assert account.pw_gecos == f"explorer-hub {user}" and account.pw_dir == str(home)
        info = home.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (account.pw_uid, 0o700), (info.st_uid, oct(info.st_mode))
        assert all(p.stat().st_uid == account.pw_uid for p in home.iterdir()), "files in the home not the student's"
        assert Path(proc.cmdline()[1]).parent == hub.student_env / "env" / "bin", proc.cmdline()
    # own copies of the released lesson and the dashboard, no voila.json (the hub's Voilà settings are the server's)
    assert sorted(p.name for p in home.glob("*.ipynb")) == sorted([FIRST_LESSON, "dashboard.ipynb"])
    assert not (home / "voila.json").exists()
    (home / "whoami.txt").write_text(user)
    if hub.homes:
        os.chown(home / "whoami.txt", account.pw_uid, account.pw_gid)
    mine = request.get(f"{hub.url}user/{user}/api/contents/whoami.txt")
    assert mine.status == 200 and mine.json()["content"] == user, (mine.status, mine.text()[:300])
    lesson = request.get(f"{hub.url}user/{user}/api/contents/{FIRST_LESSON}")
    assert lesson.status == 200, (lesson.status, lesson.text()[:300])
    released = json.loads(next(lessons.rglob(FIRST_LESSON)).read_text())["cells"]
    served_sources = [cell["source"] for cell in lesson.json()["content"]["cells"]]
    assert ["".join(s) if isinstance(s, list) else s for s in (c["source"] for c in released)] == served_sources
    assert not any("BEGIN SOLUTION" in source for source in served_sources)
    return {"pid": pid, "ports": ports}


def dashboard_extensions(html: str) -> list[str]:
    """The lab extensions Voilà's page config tells the page to load."""
    match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no jupyter-config-data on the Voilà page"
    return [ext["name"] for ext in json.loads(match.group(1))["federated_extensions"]]


def test_class_hub(browser, tmp_path, class_env):
    users = ("ada", "grace", "alan")
    # students get nbgrader's student copy of lesson 01 (make student's code path), not the solutions
    lessons = tmp_path / "course" / "release"
    release(tmp_path / "course", [NOTEBOOKS / FIRST_LESSON])
    with running_hub("class", users, class_env=class_env, EXPLORER_HUB_LESSONS=str(lessons)) as hub:
        TIMINGS["hub: start to API answering (s)"] = hub.startup_s
        servers: dict[str, dict] = {}

        # ada: login form in Chromium, asking for the class's dashboard link: the hub sends her to her own server,
        # starts it (its "not running" page, implicit spawn), then Voilà's widgets talk over websockets via CHP
        start = time.perf_counter()
        ada, ada_page, ada_errors = login_in_browser(browser, hub, "ada", CLASS_DASHBOARD_LINK)
        hub.wait_ready("ada")
        TIMINGS["hub: ada login + spawn (s)"] = time.perf_counter() - start
        ada_page.wait_for_url(f"{hub.url}user/ada/voila/render/dashboard.ipynb*", timeout=120_000)
        ada_page.wait_for_selector(PLOT, state="visible", timeout=180_000)
        TIMINGS["hub: ada login to dashboard plot visible, through the proxy (s)"] = time.perf_counter() - start
        hub.remember_tree()
        assert ada_page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        assert ada_errors == []
        # nothing failed to load but Voilà's CDN stylesheet, and the spawn page's progress stream (an EventSource
        # the browser aborts when that page moves on to the dashboard)
        progress = f"{hub.url}hub/api/users/ada/server/progress"
        assert [url for url in ada_page.failed_requests
                if not url.startswith(KNOWN_OFFLINE) and not url.startswith(progress)] == [], ada_page.failed_requests
        loaded = dashboard_extensions(ada_page.content())
        assert not DENIED_EXTENSIONS & set(loaded), loaded
        servers["ada"] = check_own_server(hub, ada.request, "ada", lessons)

        # grace: login form in Chromium, lesson 01 in JupyterLab (the default URL), a kernel under the memory limit
        start = time.perf_counter()
        grace, grace_page, grace_errors = login_in_browser(browser, hub, "grace")
        hub.wait_ready("grace")
        TIMINGS["hub: grace login + spawn (s)"] = time.perf_counter() - start
        grace_page.wait_for_url(f"{hub.url}user/grace/lab/tree/{FIRST_LESSON}*", timeout=120_000)
        grace_page.wait_for_function(_READY, arg=FIRST_LESSON, timeout=120_000, polling=250)
        TIMINGS["hub: grace login to JupyterLab notebook with idle kernel (s)"] = time.perf_counter() - start
        hub.remember_tree()
        nb = LabNotebook(name=FIRST_LESSON, page=grace_page, context=grace)
        limit = json.loads(nb.kernel("import json, resource\n"
                                     "print(json.dumps(resource.getrlimit(resource.RLIMIT_DATA)))"))
        assert limit == [2 * 1024**3, 2 * 1024**3], f"kernel RLIMIT_DATA {limit}, expected the default 2G"
        over = nb.kernel("try:\n    _x = bytearray(2 * 1024**3)\n    print('allocated')\n"
                         "except MemoryError:\n    print('MemoryError')")
        assert over.strip() == "MemoryError", over
        assert nb.kernel("print(6 * 7)").strip() == "42"  # the kernel survived its failed allocation
        # ... and in grace's own memory cgroup (all her processes together) where the machine has one, with her
        # kernels on Unix sockets in her home, not on TCP ports
        kernels = psutil.Process(hub.server("grace")["state"]["pid"]).children(recursive=True)
        assert kernels, "grace's kernel is not a child of her server"
        groups = memory_cgroups(class_env.cgroup("class"))
        if groups is not None:
            folder = groups.base / f"{hub.prefix}grace"
            assert groups.limit(folder) == 2 * 1024**3, groups.limit(folder)
            members = {int(pid) for pid in (folder / "cgroup.procs").read_text().split()}
            assert {k.pid for k in kernels} <= members, (members, kernels)
        TIMINGS["hub: memory limit per student is a cgroup (1 yes, 0 RLIMIT_DATA only)"] = float(groups is not None)
        for kernel in kernels:
            # ipykernel binds one loopback TCP socket whatever the transport: the pipe through which forked child
            # processes send output (a PULL socket: it only receives, and drops messages without the kernel's random
            # key). Every channel of the connection file is a Unix socket.
            listening = [c for c in kernel.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
            assert len(listening) <= 1, (kernel.cmdline(), listening)
        connection = next(a for a in kernels[0].cmdline() if a.endswith(".json"))
        assert json.loads(Path(connection).read_text())["transport"] == "ipc"
        runtime = Path(connection).parent  # the student's own runtime folder: 0700, theirs
        assert (runtime.stat().st_uid, runtime.stat().st_mode & 0o777) == (kernels[0].uids().real, 0o700)
        assert grace_errors == []
        servers["grace"] = check_own_server(hub, grace.request, "grace", lessons)

        # alan: plain HTTP (form + _xsrf), the dashboard rendered by Voilà in his server, read as HTML
        start = time.perf_counter()
        alan = login_over_http(browser, hub, "alan")
        hub.wait_ready("alan")
        TIMINGS["hub: alan login + spawn (s)"] = time.perf_counter() - start
        start = time.perf_counter()
        page = alan.request.get(f"{hub.url}user/alan/voila/render/dashboard.ipynb", timeout=180_000)
        TIMINGS["hub: alan dashboard rendered over HTTP (s)"] = time.perf_counter() - start
        html = page.text()
        assert page.status == 200, (page.status, html[:500])
        assert "application/vnd.jupyter.widget-view+json" in html
        assert "application/vnd.jupyter.stderr" not in html and "Traceback" not in html
        assert "from explorer.apps import dashboard" not in html  # strip_sources, from voila.json
        assert not DENIED_EXTENSIONS & set(dashboard_extensions(html))
        hub.remember_tree()
        servers["alan"] = check_own_server(hub, alan.request, "alan", lessons)

        # three servers: three processes, three ports, all running according to the hub
        assert len({s["pid"] for s in servers.values()}) == 3, servers
        assert all(not (a["ports"] & b["ports"]) for a in servers.values() for b in servers.values() if a is not b)
        status, listing = hub.api("users?state=ready")
        assert status == 200 and {u["name"] for u in listing} == set(users), listing

        # alan cannot reach ada's server. The proxy routes /user/ada/ to her server, whose hub authentication
        # refuses him: an API request gets 403; a page gets a redirect to the hub's OAuth authorization for her
        # server, which refuses him (403 "You do not have permission"). The hub's own /hub/user/ada/ says 404.
        answer = alan.request.get(f"{hub.url}user/ada/api/contents/whoami.txt", max_redirects=0)
        assert answer.status == 403 and "ada" not in answer.text(), (answer.status, answer.text()[:300])
        answer = alan.request.get(f"{hub.url}user/ada/voila/render/dashboard.ipynb", max_redirects=0)
        location = answer.headers.get("location", "")
        assert answer.status == 302 and location.startswith("/hub/api/oauth2/authorize?"), (answer.status, location)
        assert "client_id=jupyterhub-user-ada" in location
        refused = alan.request.get(f"{hub.url}{location.lstrip('/')}", max_redirects=0)
        assert refused.status == 403 and "You do not have permission to access" in refused.text(), refused.status
        assert alan.request.get(f"{hub.url}hub/user/ada/lab", max_redirects=0).status == 404
        # ... and with a token of his own (every scope limited to !user=alan): his server takes it, hers refuses it
        status, token = hub.api("users/alan/tokens", method="POST", body={"note": "isolation test", "expires_in": 600})
        assert status == 201, (status, token)
        auth = {"Authorization": f"token {token['token']}"}
        assert alan.request.get(f"{hub.url}user/alan/api/contents/whoami.txt", headers=auth).json()["content"] == "alan"
        answer = alan.request.get(f"{hub.url}user/ada/api/contents/whoami.txt", headers=auth, max_redirects=0)
        assert answer.status == 403, (answer.status, answer.text()[:300])

        # the idle culler runs as a hub-managed service
        status, services = hub.api("services")
        culler = services["idle-culler"]
        assert culler["pid"] and psutil.Process(culler["pid"]).is_running(), culler
        assert "from jupyterhub_idle_culler import main" in " ".join(culler["command"]), culler
        assert "jupyterhub_idle_culler" in " ".join(psutil.Process(culler["pid"]).cmdline())

        # stop alan's server through the API: his process and kernels exit, his route goes, the others stay up
        alan_procs = [psutil.Process(servers["alan"]["pid"])]
        alan_procs += alan_procs[0].children(recursive=True)
        assert len(alan_procs) >= 2, "alan's dashboard kernel should be running under his server"
        start = time.perf_counter()
        status, _ = hub.api("users/alan/server", method="DELETE")
        assert status in (202, 204), status
        deadline = time.monotonic() + 30
        while hub.server("alan") is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hub.server("alan") is None
        gone, still = psutil.wait_procs(alan_procs, timeout=15)
        assert not still, f"still running after stop: {still}"
        TIMINGS["hub: stop alan's server (s)"] = time.perf_counter() - start
        status, routes = hub.api("proxy")
        assert status == 200 and "/user/alan/" not in routes and {"/user/ada/", "/user/grace/"} <= set(routes), routes
        # his URL now reaches the hub, which says the server is not running, not a server
        answer = alan.request.get(f"{hub.url}user/alan/api/status", max_redirects=0)
        assert answer.status == 302 and answer.headers["location"].startswith("/hub/user/alan/"), answer.headers
        answer = alan.request.get(f"{hub.url}hub/user/alan/api/status", max_redirects=0)
        assert answer.status == 424, (answer.status, answer.text()[:300])
        for user in ("ada", "grace"):
            assert hub.server(user)["ready"]
            assert psutil.pid_exists(servers[user]["pid"])
        assert ada.request.get(f"{hub.url}user/ada/api/status").status == 200
        assert grace.request.get(f"{hub.url}user/grace/api/status").status == 200
        ada_page.wait_for_selector(PLOT, state="visible")

        for context in (ada, grace, alan):
            context.close()
    TIMINGS["hub: shutdown, 2 servers with kernels (s)"] = hub.shutdown_s
    assert hub.proc.returncode is not None
    assert not hub.leftovers, f"processes left after the hub stopped (now killed): {hub.leftovers}"
    assert hub.shutdown_s < 20, f"stopping the hub took {hub.shutdown_s:.0f} s"
    assert len(hub.tree) >= 6, f"too few processes recorded to trust the check: {hub.tree}"


def test_idle_culler_stops_idle_server():
    """A server nobody uses is stopped by the culler service once it has been idle for the timeout."""
    # 8 s: long enough that the test sees the server ready before the culler (checking every second) stops it
    with running_hub("culler", ("ada",), EXPLORER_HUB_CULL_TIMEOUT="8", EXPLORER_HUB_CULL_EVERY="1") as hub:
        start = time.perf_counter()
        status, _ = hub.api("users/ada/server", method="POST")
        assert status in (201, 202), status
        pid = hub.wait_ready("ada")["state"]["pid"]
        TIMINGS["culler: spawn (s)"] = time.perf_counter() - start
        start = time.perf_counter()
        deadline = time.monotonic() + 30
        while hub.server("ada") is not None and time.monotonic() < deadline:
            time.sleep(0.25)
        assert hub.server("ada") is None, f"not culled within 30 s:\n{hub.log_tail()}"
        TIMINGS["culler: ready to culled, timeout 8 s (s)"] = time.perf_counter() - start
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert "Culling server ada" in hub.log.read_text(errors="replace"), hub.log_tail()
    TIMINGS["culler: shutdown (s)"] = hub.shutdown_s
    assert not hub.leftovers, f"processes left after the hub stopped (now killed): {hub.leftovers}"
    # each process stopped at its first signal (the hub waits 30 s before it escalates from SIGINT to SIGTERM)
    assert hub.shutdown_s < 20, f"stopping the hub took {hub.shutdown_s:.0f} s"



@pytest.mark.parametrize("setting, args, message", [
    ({"EXPLORER_HUB_IP": "0.0.0.0"}, [], "EXPLORER_HUB_AUTH=dummy (one shared password) is refused on EXPLORER_HUB_IP"),
    # the address changed after the config file (command line, a teacher's own file): refused when the hub starts
    ({}, ["--JupyterHub.bind_url=http://0.0.0.0:{port}"], "the hub would serve on http://0.0.0.0:"),
    ({"EXPLORER_HUB_PROXY": "/nonexistent/configurable-http-proxy"}, [], "run 'make hub-proxy'"),
    ({"EXPLORER_HUB_PASSWORD": "short"}, [], "needs EXPLORER_HUB_PASSWORD, 8 characters or more"),
    ({"EXPLORER_HUB_LESSONS": "/nonexistent/release"}, [], "is not a folder (make one with: make student)"),
    ({"EXPLORER_HUB_ISOLATION": "users", "EXPLORER_HUB_ENV": "/nonexistent/env"}, [],
     "EXPLORER_HUB_ENV=/nonexistent/env cannot be the students' environment"),
    # the repository's own .venv: not root-owned read-only (or under a folder other users cannot enter)
    ({"EXPLORER_HUB_ISOLATION": "users", "EXPLORER_HUB_ENV": str(ROOT / ".venv")}, [], "holds no students' environment"),
    ({"EXPLORER_HUB_ISOLATION": "users", "EXPLORER_HUB_USER_PREFIX": "Root"}, [], "EXPLORER_HUB_USER_PREFIX='Root': prefix='Root' must be"),
    ({"EXPLORER_HUB_ISOLATION": "sometimes"}, [], "EXPLORER_HUB_ISOLATION='sometimes'"),
    ({"EXPLORER_HUB_EXCHANGE": "/srv/exchange"}, [], "need EXPLORER_HUB_ISOLATION=users"),
], ids=["dummy-on-all-interfaces", "dummy-bind-url-override", "proxy-missing", "short-password", "lessons-missing",
        "students-env-missing", "students-env-not-installed", "bad-user-prefix", "bad-isolation",
        "exchange-without-users"])
def test_hub_refuses_unsafe_or_broken_settings(setting: dict, args: list[str], message: str, tmp_path: Path):
    """The hub stops before serving anything, with a message naming what to fix."""
    if setting.get("EXPLORER_HUB_ISOLATION") == "users" and os.geteuid() != 0:
        pytest.skip("users mode refuses a non-root hub before it reads these settings")
    port = free_port()
    env = {**os.environ, "EXPLORER_HUB_AUTH": "dummy", "EXPLORER_HUB_USERS": "ada", "EXPLORER_HUB_PASSWORD": PASSWORD,
           "EXPLORER_HUB_IP": "127.0.0.1", "EXPLORER_HUB_PORT": str(port), "EXPLORER_HUB_ISOLATION": "none",
           "EXPLORER_HUB_STATE_DIR": str(tmp_path / "state"), **setting}
    done = subprocess.run([str(JUPYTERHUB), "-f", str(HUB_CONFIG), *[a.format(port=port) for a in args]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert message in done.stderr + done.stdout, (done.stderr + done.stdout)[-2000:]
    assert "JupyterHub is now running" not in done.stderr + done.stdout
