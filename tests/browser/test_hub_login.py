"""The real-class login (``explorer/deploy/native_auth_config.py``: NativeAuthenticator, the teacher approves sign-ups),
for real: a hub on free loopback ports with the real configurable-http-proxy, driven through its own pages in Chromium.

One hub (``EXPLORER_HUB_AUTH=native``, ``EXPLORER_HUB_ADMINS=teacher``, one OS user: ``EXPLORER_HUB_ISOLATION=none``)
and one story: ada signs up and is refused until approved; passwords that are too short or too common and names
outside the pattern are refused at sign-up; the teacher signs up (approved at once, being an admin), logs in and
approves ada by clicking in /hub/authorize; ada logs in and reaches her own server; after the configured number of
wrong passwords her right one is refused until the lock-out has passed (shortened to a few seconds by the test's
config, the only setting it changes). Every promised value (minimum length, number of tries, lock-out, pattern) is
read from the config as the hub loads it, not restated here. The hub is always stopped, and must leave no process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import TIMINGS
from tests.browser.dashboard_server import ROOT
from tests.browser.test_hub import CHP, TEST_CONFIG, Hub, _distinct_free_ports, served_hub
from tests.test_native_auth_config import load_hub_config, native_authenticator

pytestmark = pytest.mark.browser

NATIVE_CONFIG = ROOT / "explorer" / "deploy" / "native_auth_config.py"
LOCKOUT_S = 3  # the test's lock-out (the config's 300 s would make a slow test); NativeAuthenticator waits > this
TEACHER = "teacher"
STUDENT = "ada"
LOGIN_COOKIE = "jupyterhub-hub-login"
INVALID = "Invalid username or password."


@contextlib.contextmanager
def native_hub(log_name: str, timeout: float = 90) -> Iterator[tuple[Hub, object]]:
    """:func:`tests.browser.test_hub.running_hub` with the native config instead of the dummy login: the test's
    config (API token) loads ``native_auth_config.py``, then shortens the lock-out. Yields the hub and
    NativeAuthenticator as that config builds it (the promised settings); always stops the hub (``_shut_down``)."""
    if not CHP.exists():
        pytest.fail(f"configurable-http-proxy is missing at {CHP}: run 'make hub-proxy' (or 'make setup')")
    scratch = Path(tempfile.mkdtemp(prefix="explorer-hub-login-"))
    config = scratch / "test_config.py"
    config.write_text(TEST_CONFIG.format(config=str(NATIVE_CONFIG))
                      + f"c.NativeAuthenticator.seconds_before_next_try = {LOCKOUT_S}\n")
    port, api_port, internal_port = _distinct_free_ports(3)
    settings = {"PYTHONUNBUFFERED": "1", "HUB_TEST_TOKEN": secrets.token_hex(32), "EXPLORER_HUB_AUTH": "native",
                "EXPLORER_HUB_ADMINS": TEACHER, "EXPLORER_HUB_USERS": "", "EXPLORER_HUB_ISOLATION": "none",
                "EXPLORER_HUB_IP": "127.0.0.1", "EXPLORER_HUB_PORT": str(port),
                "EXPLORER_HUB_PROXY_API_PORT": str(api_port), "EXPLORER_HUB_INTERNAL_PORT": str(internal_port),
                "EXPLORER_HUB_STATE_DIR": str(scratch / "state")}
    try:
        promised = native_authenticator(load_hub_config(config, settings))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    with served_hub(config, {**os.environ, **settings}, log_name, timeout) as hub:
        yield hub, promised


def submit(page, hub: Hub, button: str) -> None:
    """Click the form's submit ``button`` and wait for the page it leads to. A server error (JupyterHub 6 and
    NativeAuthenticator 1.3 unmended give one on every login) fails with its status and the end of the hub's log."""
    from playwright.sync_api import Error as PlaywrightError

    problem = None
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        try:
            with page.expect_navigation():
                page.click(button)
        except PlaywrightError as error:
            problem = error
    status = posted.value.status
    assert status < 500 and problem is None, f"POST {posted.value.url} answered {status} ({problem}):\n{hub.log_tail()}"


def sign_up(browser, hub: Hub, name: str, password: str) -> tuple[str, str]:
    """Fill in and send the hub's real /hub/signup form in a fresh browser context; (alert class, message)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{hub.url}hub/signup")
        page.fill("#username_input", name)
        page.fill("#password_input", password)
        page.fill("#password_confirmation_input", password)
        submit(page, hub, "#signup_submit")
        alert = page.locator("div.alert")
        return alert.get_attribute("class") or "", " ".join(alert.inner_text().split())
    finally:
        context.close()


def log_in(context, hub: Hub, name: str, password: str, next_path: str = "/hub/home"):
    """Send the hub's login form in ``context``'s new page, asking for ``next_path`` (the hub's home: no server is
    started by the login itself). Returns (page, its URL, the login error shown or "")."""
    page = context.new_page()
    page.goto(f"{hub.url}hub/login?next={urllib.parse.quote(next_path)}")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    submit(page, hub, "#login_submit")
    error = page.locator(".login_error")
    return page, page.url, " ".join(error.inner_text().split()) if error.count() else ""


def logged_in(context) -> bool:
    return any(cookie["name"] == LOGIN_COOKIE for cookie in context.cookies())


def common_password(minimum: int) -> str:
    """A password of the allowed length from NativeAuthenticator's own list of common passwords."""
    import nativeauthenticator

    words = (Path(nativeauthenticator.__file__).with_name("common-credentials.txt").read_text().splitlines())
    return next(word for word in words if len(word) >= minimum)


def test_students_sign_up_and_the_teacher_approves(browser):
    start = time.perf_counter()
    with native_hub("login") as (hub, auth):
        TIMINGS["login hub: start to API answering (s)"] = hub.startup_s
        minimum, tries = auth.minimum_password_length, auth.allowed_failed_logins
        assert auth.open_signup is False and auth.enable_signup is True and auth.allow_all is True, (
            auth.open_signup, auth.enable_signup, auth.allow_all)
        assert auth.seconds_before_next_try == LOCKOUT_S and tries >= 2 and minimum >= 8, (
            auth.seconds_before_next_try, tries, minimum)
        student_password = "ada-" + secrets.token_urlsafe(12)
        teacher_password = "teacher-" + secrets.token_urlsafe(12)

        # (a) ada signs up through the real form: accepted, waiting for the admin
        alert, message = sign_up(browser, hub, STUDENT, student_password)
        assert "alert-info" in alert and message == "Your information has been sent to the admin.", (alert, message)

        # (b) before approval: the right password is refused, the page says why, no login cookie, no hub user/server
        student = browser.new_context()
        page, url, error = log_in(student, hub, STUDENT, student_password)
        assert url.startswith(f"{hub.url}hub/login"), url
        assert error == f"User {STUDENT} has not been authorized by an administrator yet.", error
        assert not logged_in(student), student.cookies()
        status, model = hub.api(f"users/{STUDENT}")
        assert status == 404, (status, model)
        student.close()

        # the login page's error path (NativeAuthenticator 1.3's handler needed the config's JupyterHub 6 fix here):
        # a form sent without its XSRF token gets a login page saying what to do, not a server error
        stale = browser.new_context()
        answer = stale.request.post(f"{hub.url}hub/login", form={"username": STUDENT, "password": student_password},
                                    max_redirects=0)
        assert answer.status == 403 and "Login form invalid or expired. Try again." in answer.text(), (
            answer.status, answer.text()[:500])
        assert 'name="password"' in answer.text() and not logged_in(stale), answer.text()[:500]
        stale.close()

        # (e) too short, and too common (long enough, so only its commonness refuses it): no account
        short = secrets.token_urlsafe(minimum)[:minimum - 1]
        common = common_password(minimum)
        for name, password in (("bob", short), ("carol", common)):
            alert, message = sign_up(browser, hub, name, password)
            assert "alert-danger" in alert and f"at least {minimum} characters and is not too common" in message, (
                name, len(password), alert, message)
        # (f) names outside the pattern (the last two only the pattern refuses: NativeAuthenticator's own rules
        # forbid spaces, commas and slashes), with a strong password
        for name in ("Eve Smith", "../root", "-rf", "x" * 33):
            alert, message = sign_up(browser, hub, name, "strong-" + secrets.token_urlsafe(12))
            assert "alert-danger" in alert and message.startswith("Something went wrong!"), (name, alert, message)

        # (c) the teacher (an admin name) is approved at sign-up, logs in, approves ada by clicking in /hub/authorize
        alert, message = sign_up(browser, hub, TEACHER, teacher_password)
        assert "alert-success" in alert and message.startswith("The signup was successful!"), (alert, message)
        teacher = browser.new_context()
        page, url, error = log_in(teacher, hub, TEACHER, teacher_password, "/hub/authorize")
        assert url == f"{hub.url}hub/authorize" and error == "" and logged_in(teacher), (url, error)
        status, model = hub.api(f"users/{TEACHER}")
        assert status == 200 and model["admin"] is True, (status, model)
        row = page.locator(f"tr#{STUDENT}")
        assert row.locator("td").nth(2).inner_text() == "No", row.inner_text()
        with page.expect_navigation():
            row.get_by_role("button", name="Authorize", exact=True).click()
        assert page.url == f"{hub.url}hub/authorize#{STUDENT}", page.url
        row = page.locator(f"tr#{STUDENT}")
        assert row.locator("td").nth(2).inner_text() == "Yes" and "success" in row.get_attribute("class"), (
            row.inner_text(), row.get_attribute("class"))

        # (d) ada logs in now, and reaches her own server through the proxy with her login
        start_d = time.perf_counter()
        student = browser.new_context()
        page, url, error = log_in(student, hub, STUDENT, student_password)
        assert url == f"{hub.url}hub/home" and error == "" and logged_in(student), (url, error)
        spawned = student.request.get(f"{hub.url}hub/spawn", timeout=120_000)  # as the home page's Start button
        assert spawned.ok, (spawned.status, spawned.url)
        server = hub.wait_ready(STUDENT, timeout=120)
        assert server["url"] == f"/user/{STUDENT}/", server
        # her hub login opens her server: its page (after JupyterHub's OAuth hand-shake, through the proxy), its API
        lab = student.request.get(f"{hub.url}user/{STUDENT}/")
        assert lab.status == 200 and lab.url.startswith(f"{hub.url}user/{STUDENT}/lab"), (lab.status, lab.url)
        mine = student.request.get(f"{hub.url}user/{STUDENT}/api/status")
        assert mine.status == 200 and mine.url == f"{hub.url}user/{STUDENT}/api/status" and "started" in mine.json(), (
            mine.status, mine.url, mine.text()[:300])
        TIMINGS["login hub: approved student's login to own server answering (s)"] = time.perf_counter() - start_d
        student.close()

        # (g) lock-out: tries - 1 wrong passwords still leave the right one working (which resets the count) ...
        start_g = time.perf_counter()
        wrong = "wrong-" + secrets.token_urlsafe(12)
        student = browser.new_context()
        for attempt in range(tries - 1):
            page, url, error = log_in(student, hub, STUDENT, wrong)
            assert error == INVALID, (attempt, url, error)
        page, url, error = log_in(student, hub, STUDENT, student_password)
        assert url == f"{hub.url}hub/home" and error == "", (f"refused after {tries - 1} wrong passwords", url, error)
        student.close()
        # ... `tries` wrong ones lock the name: the right password is refused until the lock-out has passed
        student = browser.new_context()
        for attempt in range(tries):
            page, url, error = log_in(student, hub, STUDENT, wrong)
            assert error == INVALID, (attempt, url, error)
        locked_at = time.monotonic()
        page, url, error = log_in(student, hub, STUDENT, student_password)
        assert url.startswith(f"{hub.url}hub/login") and error == INVALID and not logged_in(student), (
            f"not locked out after {tries} wrong passwords", url, error)
        # NativeAuthenticator lets the name in again once more than seconds_before_next_try whole seconds passed
        time.sleep(max(0.0, locked_at + LOCKOUT_S + 1.5 - time.monotonic()))
        page, url, error = log_in(student, hub, STUDENT, student_password)
        assert url == f"{hub.url}hub/home" and error == "" and logged_in(student), (
            f"still refused {time.monotonic() - locked_at:.1f} s after the lock-out began", url, error)
        TIMINGS["login hub: lock-out checks (s)"] = time.perf_counter() - start_g
        student.close()

        # refused sign-ups left no account: the teacher's list has exactly the two who signed up properly
        page = teacher.new_page()
        page.goto(f"{hub.url}hub/authorize")
        accounts = sorted(page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.id)"))
        assert accounts == sorted([STUDENT, TEACHER]), accounts
        teacher.close()
    TIMINGS["login hub: shutdown (s)"] = hub.shutdown_s
    TIMINGS["login hub: whole test (s)"] = time.perf_counter() - start
    assert hub.proc.returncode is not None
    assert not hub.leftovers, f"processes left after the hub stopped (now killed): {hub.leftovers}"
