"""explorer/deploy/native_auth_config.py, the real-class login (NativeAuthenticator with the teacher's approval),
without a browser: the settings it gives NativeAuthenticator as JupyterHub would build them, and a hub that refuses to
start, with the variable's name, when a setting would open the class. ``tests/browser/test_hub_login.py`` drives the
same config in a real hub and Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from unittest import mock

import pytest
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

ROOT = Path(__file__).resolve().parents[1]
NATIVE_CONFIG = ROOT / "explorer" / "deploy" / "native_auth_config.py"
DEPLOY_CONFIG = NATIVE_CONFIG.with_name("jupyterhub_config.py")
JUPYTERHUB = Path(sys.executable).with_name("jupyterhub")


def load_hub_config(config_file: Path, env: dict[str, str]) -> Config:
    """Run a hub config file as JupyterHub does (traitlets' loader, with ``get_config``/``load_subconfig``) under
    ``env`` added to this process's environment; the resulting Config."""
    with mock.patch.dict(os.environ, env):
        return PyFileConfigLoader(config_file.name, str(config_file.parent)).load_config()


def native_authenticator(config: Config):
    """The authenticator the hub builds from ``config`` (its ``authenticator_class``; no database: NativeAuthenticator's
    table is the hub's business), so the settings read back are what the class's traits really resolve to."""
    from nativeauthenticator import NativeAuthenticator

    chosen = config.JupyterHub.authenticator_class
    assert isinstance(chosen, type) and issubclass(chosen, NativeAuthenticator), chosen
    return chosen(add_new_table=False, config=config)


def class_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """What a teacher sets, in a scratch state directory. The proxy is never started here, so any executable will
    do for the deploy config's check; ``EXPLORER_HUB_ISOLATION=none``: the one-OS-user mode (no Unix accounts)."""
    return {"EXPLORER_HUB_AUTH": "native", "EXPLORER_HUB_ADMINS": "teacher", "EXPLORER_HUB_USERS": "",
            "EXPLORER_HUB_ISOLATION": "none", "EXPLORER_HUB_IP": "127.0.0.1",
            "EXPLORER_HUB_STATE_DIR": str(tmp_path / "state"),
            "EXPLORER_HUB_PROXY": shutil.which("true") or "/bin/true", **settings}


def test_native_is_the_packages_entry_point():
    """The name the docs tell a teacher to use, ``EXPLORER_HUB_AUTH=native``, is the package's entry point."""
    from nativeauthenticator import NativeAuthenticator

    found = {entry.name: entry.load() for entry in entry_points(group="jupyterhub.authenticators")}
    assert found.get("native") is NativeAuthenticator, f"jupyterhub.authenticators entry points: {sorted(found)}"


def test_settings_a_real_class_gets(tmp_path: Path):
    """Sign-up open, approval required, password rules, lock-out, admins from EXPLORER_HUB_ADMINS, the user name
    pattern, and JupyterHub's allow rule left to the approval."""
    from nativeauthenticator import NativeAuthenticator
    from nativeauthenticator.handlers import LoginHandler

    config = load_hub_config(NATIVE_CONFIG, class_env(tmp_path, EXPLORER_HUB_ADMINS="Teacher, ta-1  grader"))
    auth = native_authenticator(config)
    # NativeAuthenticator's pages, but /login from the config's JupyterHub 6 fix (a subclass of the original)
    routes, originals = dict(auth.get_handlers(None)), dict(NativeAuthenticator.get_handlers(auth, None))
    assert issubclass(routes["/login"], LoginHandler) and routes["/login"] is not LoginHandler, routes["/login"]
    assert {r: h for r, h in routes.items() if r != "/login"} == {r: h for r, h in originals.items() if r != "/login"}
    observed = {"enable_signup": auth.enable_signup, "open_signup": auth.open_signup,
                "minimum_password_length": auth.minimum_password_length,
                "check_common_password": auth.check_common_password,
                "allowed_failed_logins": auth.allowed_failed_logins,
                "seconds_before_next_try": auth.seconds_before_next_try, "allow_all": auth.allow_all,
                "allowed_users": auth.allowed_users, "admin_users": auth.admin_users,
                "username_pattern": auth.username_pattern}
    assert observed == {"enable_signup": True, "open_signup": False, "minimum_password_length": 10,
                        "check_common_password": True, "allowed_failed_logins": 5, "seconds_before_next_try": 300,
                        "allow_all": True, "allowed_users": set(), "admin_users": {"teacher", "ta-1", "grader"},
                        "username_pattern": r"^[a-z0-9][a-z0-9._-]{0,31}$"}, observed
    # the pattern as NativeAuthenticator applies it (its own rules, then JupyterHub's regex on the lower-cased name)
    verdicts = {name: auth.validate_username(auth.normalize_username(name))
                for name in ("ada", "Ada", "ada.lovelace_2", "x" * 32, "x" * 33, "Eve Smith", "../root", "-rf", "é",
                             "a,b", ".hidden")}
    assert verdicts == {"ada": True, "Ada": True, "ada.lovelace_2": True, "x" * 32: True, "x" * 33: False,
                        "Eve Smith": False, "../root": False, "-rf": False, "é": False, "a,b": False,
                        ".hidden": False}, verdicts


def test_a_pattern_from_the_deploy_config_is_kept(tmp_path: Path):
    """When the deploy config sets a user name pattern (per-student Unix accounts need one), this file keeps it, and
    checks the admin names against it. A copy of the file beside a deploy config that loads the real one, then sets
    a stricter pattern."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    shutil.copyfile(NATIVE_CONFIG, folder / NATIVE_CONFIG.name)
    (folder / "jupyterhub_config.py").write_text(f"load_subconfig({str(DEPLOY_CONFIG)!r})\n"
                                                 "c.Authenticator.username_pattern = r'^[a-z][a-z0-9]{0,7}$'\n")
    auth = native_authenticator(load_hub_config(folder / NATIVE_CONFIG.name, class_env(tmp_path)))
    assert auth.username_pattern == r"^[a-z][a-z0-9]{0,7}$", auth.username_pattern
    with pytest.raises(ValueError, match=r"EXPLORER_HUB_ADMINS: \['teacher-1'\] do not match") as refused:
        load_hub_config(folder / NATIVE_CONFIG.name, class_env(tmp_path, EXPLORER_HUB_ADMINS="teacher-1"))
    assert "^[a-z][a-z0-9]{0,7}$" in str(refused.value), str(refused.value)


@pytest.mark.parametrize("setting, message", [
    ({"EXPLORER_HUB_ADMINS": ""}, "EXPLORER_HUB_ADMINS is not set"),
    ({"EXPLORER_HUB_ADMINS": " , "}, "EXPLORER_HUB_ADMINS is not set"),
    ({"EXPLORER_HUB_USERS": "ada bob"}, "EXPLORER_HUB_USERS must be empty"),
    ({"EXPLORER_HUB_AUTH": ""}, "set EXPLORER_HUB_AUTH=native (found EXPLORER_HUB_AUTH='')"),
    ({"EXPLORER_HUB_AUTH": "dummy"}, "set EXPLORER_HUB_AUTH=native (found EXPLORER_HUB_AUTH='dummy')"),
    ({"EXPLORER_HUB_ADMINS": "teacher ../root"}, "EXPLORER_HUB_ADMINS: ['../root'] do not match"),
], ids=["admins-missing", "admins-blank", "users-set", "auth-missing", "auth-dummy", "admin-name-invalid"])
def test_hub_refuses_to_start(setting: dict, message: str, tmp_path: Path):
    """The real hub, started with the file as a teacher would, stops before serving anything, nonzero, with a
    message naming the variable to fix (the same settings the browser test starts, but one)."""
    from tests.browser.dashboard_server import free_port

    env = {**os.environ, **class_env(tmp_path, EXPLORER_HUB_PORT=str(free_port())), **setting}
    done = subprocess.run([str(JUPYTERHUB), "-f", str(NATIVE_CONFIG)], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0, f"exit {done.returncode}:\n{output[-2000:]}"
    assert message in output, output[-2000:]
    assert "JupyterHub is now running" not in output, output[-2000:]
