"""Hostile students on a real hub with one Unix user per student (``EXPLORER_HUB_ISOLATION=users``), on loopback.

``test_hostile_students``: a hub for ada, bob and a teacher with nbgrader's exchange and a teachers-only course
folder. The teacher releases lesson 01 and publishes it to the exchange from their own kernel; ada and bob fetch and
hand it in through their servers' nbgrader Assignments API (the calls JupyterLab's Assignments panel makes). Then
ada tries, from inside her own kernel (as her Unix user) or her own browser, everything in the table below; the
teacher collects (which refuses ada's forged hand-ins) and autogrades as their own user, and a student running a
teacher's command gets a clear refusal. ``test_subdomain_isolation``: the same hub in subdomain mode, where a page
of ada's server cannot read bob's server even in the browser of a teacher who may open both; in path mode it can,
which the first test shows and the table names.

Every attempt is recorded (what, how, what happened, refused or not), printed at the end of the session and written
to ``_artifacts/hub-attempts.md`` as a table (tests/browser/conftest.py).
"""

from __future__ import annotations

import datetime as _dt
import grp
import json
import os
import pwd
import subprocess
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from explorer.classroom import release
from explorer.deploy.cgroups import memory_cgroups
from explorer.deploy.exchange import EXCHANGE_MODES
from tests.browser.conftest import HUB_ATTEMPTS, TIMINGS
from tests.browser.hub_kernel import HubKernel, user_api
from tests.browser.test_hub import ADMIN_PASSWORD, Hub, login_in_browser, login_over_http, running_hub
from tests.browser.dashboard_server import NOTEBOOKS

pytestmark = pytest.mark.browser

LESSON = "01_receptive_fields"
COURSE_ID = "explorer"
MEM_LIMIT = 1536 * 1024**2

# Run in a student's kernel: ``body`` sets ``_result``; prints ALLOWED <result>, or REFUSED <error> for a refusal by
# the operating system (EACCES/EPERM), or ERROR for anything else (which fails the test: the attempt was not made).
PROBE = """
import errno as _errno
try:
{body}
    print("ALLOWED", repr(_result)[:160])
except PermissionError as _e:
    print("REFUSED", type(_e).__name__, _errno.errorcode.get(_e.errno, _e.errno))
except Exception as _e:
    print("ERROR", type(_e).__name__, str(_e)[:300])
"""


# In a page: fetch a URL with the browser's cookies; or load it in a frame and read the frame's text.
FETCH = """async (url) => { try { const r = await fetch(url, {credentials: 'include'});
             return r.status + ' ' + (r.ok ? (await r.json()).content : ''); } catch (e) { return 'blocked: ' + e; } }"""
IFRAME = """async (url) => { const f = document.createElement('iframe'); f.src = url;
              const loaded = new Promise(r => { f.onload = r; });
              document.body.appendChild(f); await loaded;
              try { return 'read: ' + f.contentDocument.body.innerText.slice(0, 300); }
              catch (e) { return 'blocked: ' + e; } }"""
# Open ``url`` (a file in another server's JupyterLab) in a frame and look for ``needle`` in the frame's text, as a
# script in a page could: JupyterLab in the frame fetches the file with its own XSRF token, and the page reads what
# it shows, when the frame has the page's origin.
READ_FRAME = """async ([url, needle]) => { const f = document.createElement('iframe'); f.src = url;
                  f.style.width = '1200px'; f.style.height = '800px'; document.body.appendChild(f);
                  for (let i = 0; i < 240; i++) {
                    await new Promise(r => setTimeout(r, 250));
                    let doc; try { doc = f.contentDocument; } catch (e) { return 'blocked: ' + e; }
                    if (doc === null) return 'blocked: the frame is another origin, its document out of reach';
                    if (doc.body && doc.body.innerText.includes(needle)) return 'read: ' + needle;
                  }
                  return 'not found in the frame within 60 s'; }"""


def record(what: str, how: str, outcome: str, refused: bool, note: str = "") -> None:
    HUB_ATTEMPTS.append({"attempt": what, "how": how, "outcome": outcome, "refused": refused, "note": note})


def attempt(kernel: HubKernel, what: str, body: str, note: str = "") -> str:
    """Run ``body`` in ``kernel`` (a student's own), record it, and assert the OS refused it."""
    out = kernel.run(PROBE.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))).strip()
    refused = out.startswith("REFUSED")
    record(what, f"{kernel.user}'s kernel", out, refused, note)
    assert refused, f"{what}: {out}"
    return out


def open_server_page(page, url: str) -> None:
    """Go to ``url`` of a server; if the hub asks whether to authorize the visit (an admin opening another user's
    server), accept, and wait until the server's page is there."""
    page.goto(url)
    if "/hub/api/oauth2/authorize" in page.url:
        page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(lambda now: now.startswith(url), timeout=60_000)


def token_for(hub: Hub, user: str) -> str:
    status, token = hub.api(f"users/{user}/tokens", method="POST", body={"note": "hostile test", "expires_in": 900})
    assert status == 201, (status, token)
    return token["token"]


def start_servers(hub: Hub, users: tuple[str, ...]) -> dict[str, dict]:
    for user in users:
        status, _ = hub.api(f"users/{user}/server", method="POST")
        assert status in (201, 202), (user, status, hub.log_tail())
    return {user: hub.wait_ready(user) for user in users}


def classroom(kernel: HubKernel, *args: str) -> tuple[int, str]:
    """``python -m explorer.classroom ARGS`` run from the user's kernel (as their terminal would): (rc, output)."""
    out = kernel.run(
        "import subprocess, sys\n"
        f"_r = subprocess.run([sys.executable, '-m', 'explorer.classroom', *{list(args)!r}], capture_output=True, "
        "text=True)\n"
        "print(_r.returncode)\nprint(_r.stdout[-3000:])\nprint(_r.stderr[-3000:])", timeout=600)
    first, _, rest = out.partition("\n")
    return int(first), rest


def test_hostile_students(browser, tmp_path, class_env):
    lessons = tmp_path / "course" / "release"
    release(tmp_path / "course", [NOTEBOOKS / f"{LESSON}.ipynb"])
    base = class_env.public / "hostile"
    exchange, course = base / "exchange", base / "course"
    users = ("ada", "bob", "teach")
    with running_hub("hostile", users, class_env=class_env, EXPLORER_HUB_LESSONS=str(lessons),
                     EXPLORER_HUB_TEACHERS="teach", EXPLORER_HUB_EXCHANGE=str(exchange),
                     EXPLORER_HUB_COURSE=str(course), EXPLORER_HUB_MEM_LIMIT="1536M") as hub:
        start = time.perf_counter()
        servers = start_servers(hub, users)
        TIMINGS["hostile: 3 servers started as 3 Unix users (s)"] = time.perf_counter() - start
        names = {u: f"{hub.prefix}{u}" for u in users}
        accounts = {u: pwd.getpwnam(names[u]) for u in users}
        assert len({a.pw_uid for a in accounts.values()}) == 3
        # the exchange and the course folder as the hub made them
        for key, path in (("", exchange), ("course", exchange / COURSE_ID), ("inbound", exchange / COURSE_ID / "inbound"),
                          ("outbound", exchange / COURSE_ID / "outbound")):
            assert oct(path.stat().st_mode & 0o7777) == oct(EXCHANGE_MODES[key]), (path, oct(path.stat().st_mode))
        assert oct(course.stat().st_mode & 0o7777) == oct(0o2770)
        tokens = {u: token_for(hub, u) for u in users}
        kernels = {u: HubKernel(hub.url, u, tokens[u]).start() for u in users}
        try:
            run_class(browser, hub, class_env, kernels, tokens, servers, exchange, course)
        finally:
            for kernel in kernels.values():
                kernel.shutdown()
    assert not hub.leftovers, f"processes left after the hub stopped (now killed): {hub.leftovers}"


def run_class(browser, hub: Hub, class_env, kernels: dict[str, HubKernel], tokens: dict[str, str], servers: dict,
              exchange: Path, course: Path) -> None:
    ada, bob, teach = kernels["ada"], kernels["bob"], kernels["teach"]
    prefix = hub.prefix

    # --- the teacher releases lesson 01 and publishes it, as their own Unix user ---------------------------------
    start = time.perf_counter()
    lesson_src = class_env.env / "src" / "notebooks" / f"{LESSON}.ipynb"
    rc, out = classroom(teach, "release", str(course), str(lesson_src))
    assert rc == 0, out
    rc, out = classroom(teach, "publish", str(course), "--exchange", str(exchange))
    assert rc == 0 and f"published {LESSON}" in out, out
    TIMINGS["hostile: teacher release + publish (s)"] = time.perf_counter() - start
    gradebook = course / "gradebook.db"
    solutions = course / "source" / LESSON / f"{LESSON}.ipynb"
    assert gradebook.is_file() and solutions.is_file()
    assert gradebook.stat().st_uid == pwd.getpwnam(f"{prefix}teach").pw_uid

    # --- ada fetches and hands in from JupyterLab's Assignments panel (nbgrader's lab extension) in Chromium; bob
    # through the same server API the panel calls ----------------------------------------------------------------
    start = time.perf_counter()
    ada_ctx, ada_page, _ = login_in_browser(browser, hub, "ada")
    ada_page.wait_for_url(f"{hub.url}user/ada/lab/**", timeout=120_000)
    ada_page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands.hasCommand("
                               "'nbgrader:open-assignment-list')", timeout=120_000, polling=250)
    ada_page.evaluate("() => window.jupyterapp.commands.execute('nbgrader:open-assignment-list')")
    # the panel's own buttons, clicked through their handlers (the panel may open behind the lesson's tab)
    fetch = ada_page.locator("#released_assignments_list .list_item", has_text=LESSON).locator("button",
                                                                                               has_text="Fetch")
    fetch.wait_for(state="attached", timeout=60_000)
    fetch.evaluate("button => button.click()")
    submit = ada_page.locator("#fetched_assignments_list .list_item", has_text=LESSON).locator("button",
                                                                                               has_text="Submit")
    submit.wait_for(state="attached", timeout=60_000)
    submit.evaluate("button => button.click()")
    ada_page.locator("#submitted_assignments_list .list_item", has_text=LESSON).first.wait_for(state="attached",
                                                                                                timeout=60_000)
    TIMINGS["hostile: ada fetch + hand in from JupyterLab's Assignments panel (s)"] = time.perf_counter() - start
    assert (hub.home("ada") / LESSON / f"{LESSON}.ipynb").stat().st_uid == pwd.getpwnam(f"{prefix}ada").pw_uid
    ada_ctx.close()
    start = time.perf_counter()
    for user in ("bob",):
        status, listed = user_api(hub.url, user, tokens[user], f"assignments?course_id={COURSE_ID}")
        assert status == 200 and listed["success"], (status, listed)
        assert [(a["assignment_id"], a["status"]) for a in listed["value"]] == [(LESSON, "released")], listed
        body = {"course_id": COURSE_ID, "assignment_id": LESSON}
        status, listed = user_api(hub.url, user, tokens[user], "assignments/fetch", "POST", body)
        assert status == 200 and any(a["status"] == "fetched" for a in listed["value"]), (status, listed)
        status, listed = user_api(hub.url, user, tokens[user], "assignments/submit", "POST", body)
        assert status == 200 and listed["success"], (status, listed)
        assert any(a["status"] == "submitted" for a in listed["value"]), listed
    TIMINGS["hostile: bob fetch + hand in through the server API (s)"] = time.perf_counter() - start
    inbound = exchange / COURSE_ID / "inbound"
    handins = {p.name.split("+")[0]: p for p in inbound.iterdir()}
    assert set(handins) == {f"{prefix}ada", f"{prefix}bob"}, list(handins)
    bob_handin = handins[f"{prefix}bob"]
    assert bob_handin.stat().st_uid == pwd.getpwnam(f"{prefix}bob").pw_uid
    assert oct(bob_handin.stat().st_mode & 0o7777) == oct(0o750), oct(bob_handin.stat().st_mode)
    assert bob_handin.stat().st_gid == grp.getgrnam(class_env.teachers_group).gr_gid

    # --- what ada tries, from her own kernel ----------------------------------------------------------------------
    bob_home, homes = hub.home("bob"), hub.home("bob").parent
    (bob_home / "secret.txt").write_text("bob's work")
    os.chown(bob_home / "secret.txt", pwd.getpwnam(f"{prefix}bob").pw_uid, pwd.getpwnam(f"{prefix}bob").pw_gid)
    attempt(ada, "list another student's home", f"_result = __import__('os').listdir({str(bob_home)!r})")
    attempt(ada, "read another student's file", f"_result = open({str(bob_home / 'secret.txt')!r}).read()")
    attempt(ada, "list the homes folder (who else is in the class)", f"_result = __import__('os').listdir({str(homes)!r})")
    attempt(ada, "write a file into another student's home", f"_result = open({str(bob_home / 'x.py')!r}, 'w')")
    attempt(ada, "read the gradebook", f"_result = open({str(gradebook)!r}, 'rb').read(16)")
    attempt(ada, "read the solutions (teacher's source copy)", f"_result = open({str(solutions)!r}).read(100)")
    attempt(ada, "read the hub's database (tokens) and cookie secret",
            f"_result = open({str(hub.state / 'jupyterhub.sqlite')!r}, 'rb').read(16)")
    attempt(ada, "change a module every kernel imports",
            f"_result = open({str(class_env.env / 'src' / 'explorer' / '__init__.py')!r}, 'a')")
    site = next((class_env.env / "env" / "lib").glob("python3*/site-packages"))
    attempt(ada, "add a .pth file to the environment (code run at every start)",
            f"_result = open({str(site / 'zz_evil.pth')!r}, 'w')")
    attempt(ada, "change the servers' configuration",
            f"_result = open({str(class_env.env / 'etc' / 'explorer-hub' / 'jupyter_server_config.json')!r}, 'a')")
    attempt(ada, "list the exchange's inbound (everyone's hand-ins)", f"_result = __import__('os').listdir({str(inbound)!r})")
    attempt(ada, "read another's hand-in, its folder name known",
            f"_result = __import__('os').listdir({str(bob_handin)!r})",
            "hand-ins are made rwxr-x--- (owner + teachers) by PrivateSubmit; nbgrader's own default is 0777")
    attempt(ada, "rename (remove) another's hand-in, its name known",
            f"_result = __import__('os').rename({str(bob_handin)!r}, {str(inbound / 'gone')!r})",
            "the inbound's sticky bit")
    attempt(ada, "publish an assignment (write the outbound)",
            f"_result = open({str(exchange / COURSE_ID / 'outbound' / 'fake.txt')!r}, 'w')")

    # bob's kernel: Unix sockets in his home, nothing on TCP; its connection file and sockets out of ada's reach
    bob_kernels = psutil.Process(servers["bob"]["state"]["pid"]).children(recursive=True)
    bob_kernel = next(k for k in bob_kernels if any(a.endswith(".json") for a in k.cmdline()))
    pipe = [c.laddr.port for c in bob_kernel.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert len(pipe) <= 1, pipe
    if pipe:  # ipykernel's pipe for forked children's output: on TCP whatever the transport
        out = ada.run("import zmq, time\n_s = zmq.Context.instance().socket(zmq.PUSH)\n_s.linger = 0\n"
                      f"_s.connect('tcp://127.0.0.1:{pipe[0]}')\n_s.send_multipart([b'forged', b'x'])\n"
                      "time.sleep(0.5)\nprint('sent')").strip()
        record("send into another's kernel's output pipe (ipykernel's one TCP socket)", "ada's kernel",
               out + "; bob's kernel drops it (no 16-byte key)", False,
               "not refusable: ipykernel binds it on loopback TCP whatever the transport; it only receives, and "
               "drops messages without the kernel's random key, so nothing can be read or injected")
    connection = Path(next(a for a in bob_kernel.cmdline() if a.endswith(".json")))
    info = json.loads(connection.read_text())
    assert info["transport"] == "ipc", info
    socket_path = f"{info['ip']}-{info['shell_port']}"
    assert Path(socket_path).exists(), socket_path
    attempt(ada, "read another's kernel connection file (its signing key)",
            f"_result = open({str(connection)!r}).read()")
    attempt(ada, "connect to another's kernel (its shell socket)",
            "import socket\n_s = socket.socket(socket.AF_UNIX)\n"
            f"_s.connect({socket_path!r})\n_result = 'connected'",
            "kernels use ipc transport in the 0700 home; on TCP any local user could subscribe to iopub")
    attempt(ada, "read another's server environment (its API token)",
            f"_result = open('/proc/{servers['bob']['state']['pid']}/environ', 'rb').read(64)")
    attempt(ada, "signal another's kernel", f"import os\nos.kill({bob_kernel.pid}, 0)\n_result = 'may signal'")

    # another's server, with ada's own credentials: the token her server got from the hub (in her kernel's
    # environment), straight to bob's port and through the proxy; and the hub's API about bob
    bob_port = next(c.laddr.port for c in psutil.Process(servers["bob"]["state"]["pid"]).net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN)
    for what, url in (("another's server API, own token, its port directly",
                       f"http://127.0.0.1:{bob_port}/user/bob/api/contents/secret.txt"),
                      ("another's server API, own token, through the proxy", f"{hub.url}user/bob/api/contents"),
                      ("the hub's API about another student, own token", f"{hub.url}hub/api/users/bob")):
        out = ada.run(
            "import os, urllib.request, urllib.error\n"
            f"_q = urllib.request.Request({url!r}, headers={{'Authorization': 'token ' + "
            "os.environ['JUPYTERHUB_API_TOKEN']})\n"
            "try:\n    print('ALLOWED', urllib.request.urlopen(_q, timeout=30).status)\n"
            "except urllib.error.HTTPError as _e:\n    print('REFUSED HTTP', _e.code)\n").strip()
        record(what, "ada's kernel", out, out.startswith("REFUSED HTTP 40"))
        assert out.startswith("REFUSED HTTP 40"), (what, out)

    # --- impersonation and forged times at hand-in; a teacher's command run by a student -----------------------
    out = ada.run(
        "import subprocess, sys\n"
        f"_r = subprocess.run([sys.executable, '-m', 'nbgrader', 'submit', '{LESSON}', '--student={prefix}bob'], "
        "capture_output=True, text=True)\nprint(_r.returncode, _r.stderr[-400:])").strip()
    assert out.startswith("0"), out
    forged_time = (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    forged = inbound / f"{prefix}ada+{LESSON}+{forged_time}+forged"
    out = ada.run(
        "import shutil, os\n"
        f"shutil.copytree({LESSON!r}, {str(forged)!r})\n"
        f"open(os.path.join({str(forged)!r}, 'timestamp.txt'), 'w').write({forged_time!r})\nprint('written')").strip()
    assert out == "written", out
    for what, args in (("collect hand-ins (a teacher's command)", ("collect", str(course), "--exchange", str(exchange),
                                                                    "--prefix", prefix)),
                       ("autograde (a teacher's command)", ("autograde", str(course))),
                       ("publish to the exchange (a teacher's command)", ("publish", str(course), "--exchange",
                                                                          str(exchange)))):
        rc, out = classroom(ada, *args)
        record(what, "ada's kernel", f"exit {rc}: {out.strip().splitlines()[-1] if out.strip() else ''}", rc == 2)
        assert rc == 2 and "only teachers" in out, (what, rc, out)

    # the teacher collects: the two real hand-ins in, ada's hand-in as bob and her back-dated one refused
    start = time.perf_counter()
    rc, out = classroom(teach, "collect", str(course), "--exchange", str(exchange), "--prefix", prefix)
    assert rc == 0, out
    refused = [line for line in out.splitlines() if line.startswith("refused ")]
    impersonation = [line for line in refused if line.startswith(f"refused {prefix}bob+")]
    assert len(impersonation) == 1 and f"its folder belongs to {prefix}ada" in impersonation[0], refused
    backdated = [line for line in refused if "+forged" in line]
    assert len(backdated) == 1 and "after the time it claims" in backdated[0], refused
    record("hand in as another student (nbgrader submit --student=<bob>)", "ada's kernel",
           "nbgrader accepts it; the teacher's collect refuses it: " + impersonation[0].split(": ", 1)[1], True,
           "nbgrader's own collect only logs 'cheating attempt?' and grades it")
    record("hand in with a time 2 hours back", "ada's kernel",
           "the teacher's collect refuses it: " + backdated[0].split(": ", 1)[1], True,
           "times are checked against the files' inode change times, which the owner cannot set back")
    collected = sorted(p.name for p in (course / "submitted").iterdir())
    assert collected == ["ada", "bob"], collected
    rc, out = classroom(teach, "autograde", str(course), "--json")
    assert rc == 0, out
    rows, _ = json.JSONDecoder().raw_decode(out[out.index("["):])  # stdout's JSON; stderr's notes follow it
    assert {r["student"] for r in rows} == {"ada", "bob"} and all(r["max_score"] > 0 for r in rows), rows
    TIMINGS["hostile: teacher collect + autograde 2 hand-ins (s)"] = time.perf_counter() - start
    # ... and the exchange is still where nbgrader's own tools see it: a missing one is a clear error
    rc, out = classroom(teach, "collect", str(course), "--exchange", "/nonexistent/exchange", "--prefix", prefix)
    assert rc == 2 and "no inbound folder" in out, out

    # --- memory: past her limit, ada's processes die, nobody else's --------------------------------------------
    out = ada.run("try:\n    _x = bytearray(2 * 1024**3)\n    print('allocated')\nexcept MemoryError:\n"
                  "    print('MemoryError')").strip()
    record("allocate past the memory limit in one go (2 GiB)", "ada's kernel", out, out == "MemoryError",
           "RLIMIT_DATA per process; the kernel survives")
    assert out == "MemoryError", out
    groups = memory_cgroups(class_env.cgroup("hostile"))
    folder = groups.base / f"{prefix}ada" if groups else None
    before = groups.oom_kills(folder) if groups else 0
    hog = ("b = bytearray(800 * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"
           "import time; time.sleep(15)")
    out = ada.run("import subprocess, sys\n"
                  f"_p = [subprocess.Popen([sys.executable, '-c', {hog!r}]) for _ in range(3)]\n"
                  "print([p.wait(timeout=120) for p in _p])", timeout=180).strip()
    codes = json.loads(out)
    if groups is not None:
        kills = groups.oom_kills(folder) - before
        record("three processes of 800 MB each (2.4 GB; the limit is 1.5 GiB for all of a student's processes)",
               "ada's kernel", f"exit codes {codes}; {kills} killed by the OOM killer in ada's cgroup", -9 in codes,
               f"cgroup v{groups.version}: the student's processes together")
        assert -9 in codes and kills >= 1, (codes, kills)
    else:
        record("three processes of 800 MB each", "ada's kernel", f"exit codes {codes}", False,
               "no writable memory cgroup here: only RLIMIT_DATA per process, which does not add them up")
    status, _ = hub.api("")
    assert status == 200
    assert hub.server("bob")["ready"] and psutil.pid_exists(servers["bob"]["state"]["pid"])
    assert bob.run("print(6 * 7)").strip() == "42"
    assert ada.run("print('still here')").strip() == "still here"  # her kernel was not the process killed

    # --- bad input: a name that cannot be a Unix user; a name taken by an account this hub did not make -------
    status, answer = hub.api("users/Eve%20Smith", method="POST")
    record("create a hub user whose name is not a valid Unix name ('Eve Smith')", "hub API (admin)",
           f"HTTP {status}", status == 400)
    assert status == 400, (status, answer)
    squatter = f"{prefix}eve"
    subprocess.run(["useradd", "--no-create-home", "--comment", "someone else", squatter], check=True)
    try:
        status, _ = hub.api("users/eve", method="POST")
        assert status == 201, status
        status, answer = hub.api("users/eve/server", method="POST")
        deadline = time.monotonic() + 30
        while status in (201, 202) and time.monotonic() < deadline:
            model = hub.server("eve")
            if model is None:
                break
            time.sleep(0.25)
        log = hub.log.read_text(errors="replace")
        assert "already exists and was not made by this hub for 'eve'" in log + str(answer), hub.log_tail()
        assert not hub.home("eve").exists(), "a home was created for a refused account"
        record("log in as a name whose Unix account already exists (made by someone else)", "hub (spawn)",
               "spawn refused: the account was not made by this hub; nothing created", True)
    finally:
        subprocess.run(["userdel", squatter], capture_output=True)

    # --- browser: ada's cookie on bob's server; a teacher's visit in path mode -------------------------------------
    ada_ctx = login_over_http(browser, hub, "ada")
    answer = ada_ctx.request.get(f"{hub.url}user/bob/api/contents/secret.txt", max_redirects=0)
    record("another's server API with own login cookie", "ada's browser", f"HTTP {answer.status}", answer.status == 403)
    assert answer.status == 403, answer.status
    ada_ctx.close()
    teacher = login_over_http(browser, hub, "teach", ADMIN_PASSWORD)
    page = teacher.new_page()
    open_server_page(page, f"{hub.url}user/bob/lab")  # the teacher helps bob: his server lets her in
    # ... then opens ada's JupyterLab, where a script of ada's runs (a notebook output, say). Not an API page: those
    # come with a sandboxing content-security policy, which gives them an opaque origin of their own.
    open_server_page(page, f"{hub.url}user/ada/lab")
    result = page.evaluate(FETCH, "/user/bob/api/contents/secret.txt")
    record("path mode: script in ada's page fetches bob's file with a teacher's cookies", "ada's page, teacher's "
           "browser", result, result.startswith("403"),
           "JupyterHub's XSRF check on cookie-authenticated fetches (the _xsrf cookie is per server path)")
    assert result.startswith("403"), result
    result = page.evaluate(IFRAME, "/user/bob/api/contents/secret.txt")
    record("path mode: script in ada's page loads bob's file in a frame and reads it, with a teacher's cookies",
           "ada's page, teacher's browser", result, "bob's work" not in result,
           "NOT refusable in path mode: every server shares the hub's origin, so a page may read a same-origin "
           "frame; subdomain mode refuses it (test_subdomain_isolation)")
    assert result.startswith("read") and "bob's work" in result, result  # the reason subdomain mode exists
    teacher.close()


def test_subdomain_isolation(browser, class_env):
    """Each server on its own origin (<name>.localhost): a page of amy's server cannot read ben's server, even in
    the browser of a teacher whose cookies open both."""
    users = ("amy", "ben", "tutor")  # accounts of this session already made for ada & co. have homes elsewhere
    with running_hub("subdomain", users, class_env=class_env, EXPLORER_HUB_TEACHERS="tutor",
                     EXPLORER_HUB_SUBDOMAIN_HOST="http://localhost:{port}") as hub:
        port = hub.url.rsplit(":", 1)[1].strip("/")
        origin = f"http://localhost:{port}"
        servers = start_servers(hub, users)
        assert servers["amy"]["url"] == f"http://amy.localhost:{port}/user/amy/", servers["amy"]
        ben_home = hub.home("ben")
        (ben_home / "secret.txt").write_text("ben's work")
        account = pwd.getpwnam(f"{hub.prefix}ben")
        os.chown(ben_home / "secret.txt", account.pw_uid, account.pw_gid)
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{origin}/hub/login")
        page.fill("input[name=username]", "tutor")
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url(lambda now: "/hub/login" not in now, timeout=60_000)  # logged in (to her own server)
        ben_file = f"http://ben.localhost:{port}/user/ben/api/contents/secret.txt"
        for user in ("ben", "amy"):
            open_server_page(page, f"http://{user}.localhost:{port}/user/{user}/lab")
            if user == "ben":  # the teacher's browser can read ben's file from ben's own origin...
                assert page.evaluate(READ_FRAME, [f"http://ben.localhost:{port}/user/ben/lab/tree/secret.txt",
                                                  "ben's work"]) == "read: ben's work"
        # ... but not from a page of amy's server
        result = page.evaluate(FETCH, ben_file)
        record("subdomain mode: script in a student's page fetches another's file with a teacher's cookies",
               "amy's page, teacher's browser", result, result.startswith("blocked"),
               "another origin: the content-security policy (connect-src 'self') and CORS stop it")
        assert result.startswith("blocked"), result
        result = page.evaluate(IFRAME, ben_file)
        record("subdomain mode: script in a student's page loads another's file in a frame and reads it, with a "
               "teacher's cookies", "amy's page, teacher's browser", result, result.startswith("blocked"),
               "another origin: the frame's document is out of reach")
        assert result.startswith("blocked"), result
        result = page.evaluate(READ_FRAME, [f"http://ben.localhost:{port}/user/ben/lab/tree/secret.txt", "ben's work"])
        record("subdomain mode: script in a student's page opens another's file in his JupyterLab in a frame and "
               "reads it, with a teacher's cookies", "amy's page, teacher's browser", result,
               result.startswith("blocked"), "another origin: the frame's document is out of reach")
        assert result.startswith("blocked"), result
        context.close()
    assert not hub.leftovers, hub.leftovers
