"""Unix names for hub users, and accounts made on first spawn (as root: real useradd, removed afterwards)."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import secrets
import stat
import subprocess

import pytest

from explorer.deploy.accounts import MAX_UNIX_NAME, ensure_account, remove_accounts, unix_name


@pytest.mark.parametrize("name", ["ada", "grace-h", "x_1", "a" * 24])
def test_plain_names_keep_their_name(name):
    assert unix_name(name) == "jupyter-" + name


@pytest.mark.parametrize("name", ["ada.lovelace@school.edu", "ada+1", "a" * 25, "b" * 64])
def test_other_names_are_cut_and_hashed_within_linux_limit(name):
    got = unix_name(name)
    digest = hashlib.sha256(name.encode()).hexdigest()[:7]
    assert got.startswith("jupyter-") and got.endswith("-" + digest) and len(got) <= MAX_UNIX_NAME, got
    assert all(ch.isalnum() or ch in "-_" for ch in got)


def test_names_that_differ_only_in_replaced_characters_get_different_accounts():
    names = ["ada.l", "ada-l", "ada@l", "ada+l"]
    assert len({unix_name(n) for n in names}) == len(names)


@pytest.mark.parametrize("name", ["Ada", "eve smith", "../root", "", "-x", "é", "a/b", "a" * 65])
def test_names_that_cannot_be_unix_names_are_refused_with_the_name(name):
    with pytest.raises(ValueError, match="cannot become a Unix user"):
        unix_name(name)


@pytest.mark.parametrize("prefix", ["", "Jupyter-", "1x-", "a" * 17, "x:"])
def test_bad_prefix_is_refused(prefix):
    with pytest.raises(ValueError, match="prefix="):
        unix_name("ada", prefix)


def test_non_str_name_is_a_type_error():
    with pytest.raises(TypeError, match="hub_name"):
        unix_name(42)


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="creating Unix accounts needs root (CI runs as root)")


@pytest.fixture
def prefix(tmp_path):
    prefix = f"xu{secrets.token_hex(2)}-"
    yield prefix
    remove_accounts(prefix)
    for group in (f"{prefix}s", f"{prefix}t"):
        subprocess.run(["groupdel", group], capture_output=True)


@root_only
def test_account_is_made_once_with_private_home_and_groups(tmp_path, prefix):
    homes = tmp_path / "homes"
    account = ensure_account("ada", homes=homes, prefix=prefix, students_group=f"{prefix}s",
                             extra_groups=(f"{prefix}t",))
    entry = pwd.getpwnam(f"{prefix}ada")
    assert (account.uid, account.home) == (entry.pw_uid, homes / f"{prefix}ada")
    assert entry.pw_gecos == "explorer-hub ada" and entry.pw_uid != 0
    info = account.home.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (entry.pw_uid, 0o700)
    assert stat.S_IMODE(homes.stat().st_mode) == 0o711
    assert f"{prefix}ada" in grp.getgrnam(f"{prefix}s").gr_mem and f"{prefix}ada" in grp.getgrnam(f"{prefix}t").gr_mem
    account.home.chmod(0o755)  # loosened by hand: the next start makes it private again
    again = ensure_account("ada", homes=homes, prefix=prefix, students_group=f"{prefix}s")
    assert again.uid == account.uid and stat.S_IMODE(again.home.stat().st_mode) == 0o700
    assert remove_accounts(prefix) == [f"{prefix}ada"] and not account.home.exists()


@root_only
def test_an_account_this_hub_did_not_make_is_refused_and_nothing_is_created(tmp_path, prefix):
    subprocess.run(["useradd", "--no-create-home", "--comment", "someone", f"{prefix}eve"], check=True)
    try:
        with pytest.raises(ValueError, match=f"'{prefix}eve', which already exists and was not made by this hub"):
            ensure_account("eve", homes=tmp_path / "homes", prefix=prefix, students_group=f"{prefix}s")
        assert not (tmp_path / "homes" / f"{prefix}eve").exists()
        assert pwd.getpwnam(f"{prefix}eve").pw_gecos == "someone"
        # ... and an account made for another hub name (a name chosen to hit its hash) is refused too
        made = ensure_account("ada.l", homes=tmp_path / "homes", prefix=prefix, students_group=f"{prefix}s")
        subprocess.run(["usermod", "--comment", "explorer-hub mallory", made.name], check=True)
        with pytest.raises(ValueError, match="not made by this hub for 'ada.l'"):
            ensure_account("ada.l", homes=tmp_path / "homes", prefix=prefix, students_group=f"{prefix}s")
    finally:
        subprocess.run(["userdel", f"{prefix}eve"], capture_output=True)
