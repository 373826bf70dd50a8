"""One Unix account per hub user: names, creation on first spawn, groups, private homes.

A hub name becomes ``<prefix><name>`` (prefix ``jupyter-`` by default, as The Littlest JupyterHub does), so no hub
login can map onto ``root``, a system account or a teacher's own login on the machine. Names that are not already
safe Unix names (``.``/``@``/``+`` in an e-mail-like login) or that would pass Linux's 32-character limit are
normalised and get a short hash of the hub name, so two hub names never share an account. Anything else (spaces,
``/``, capitals -- JupyterHub lowercases names --, non-ASCII) is refused with a ValueError naming the hub name;
:data:`HUB_NAME_PATTERN` is also given to ``Authenticator.username_pattern``, so such a name cannot even log in.

Accounts this hub creates carry the hub name in their comment field (``explorer-hub <name>``) and belong to the
students' group; an existing account with the same Unix name that is not marked so (someone's own account, or one
made for another hub name) is refused, and nothing is created. Homes are mode 0700 in a homes folder of mode 0711
(users can enter their own home but not list the folder's names).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HUB_NAME_PATTERN", "unix_name", "Account", "ensure_group", "ensure_account", "remove_accounts",
           "COMMENT"]

HUB_NAME_PATTERN = r"^[a-z0-9][a-z0-9._@+-]{0,63}$"
_UNIX_SAFE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_PREFIX = re.compile(r"^[a-z_][a-z0-9_-]{0,15}$")
MAX_UNIX_NAME = 32  # useradd's limit on Linux
COMMENT = "explorer-hub {name}"  # no ":" or "," (passwd field separators)
DEFAULT_SHELL = "/bin/bash"  # JupyterLab's terminals


def unix_name(hub_name: str, prefix: str = "jupyter-") -> str:
    """``prefix + hub_name`` when that is a safe Unix name of at most 32 characters; otherwise the name with ``.``,
    ``@``, ``+`` replaced by ``-``, cut to fit, and ``-`` + 7 hex digits of the hub name's SHA-256.

    Raises:
        TypeError: ``hub_name`` is not a str.
        ValueError: ``hub_name`` does not match :data:`HUB_NAME_PATTERN`; ``prefix`` is not a safe prefix.
    """
    if not isinstance(hub_name, str):
        raise TypeError(f"hub_name must be a str, got {type(hub_name).__name__}")
    if not _PREFIX.match(prefix):
        raise ValueError(f"prefix={prefix!r} must be 1-16 characters of a-z, 0-9, '_' and '-', starting with a letter")
    if not re.match(HUB_NAME_PATTERN, hub_name):
        raise ValueError(f"hub name {hub_name!r} cannot become a Unix user: use 1-64 characters of a-z, 0-9, '.', "
                         "'_', '@', '+', '-', starting with a letter or digit")
    plain = prefix + hub_name
    if _UNIX_SAFE.match(hub_name) and len(plain) <= MAX_UNIX_NAME:
        return plain
    digest = hashlib.sha256(hub_name.encode()).hexdigest()[:7]
    stem = re.sub(r"[^a-z0-9_-]", "-", hub_name)[: MAX_UNIX_NAME - len(prefix) - 8].rstrip("-")
    return f"{prefix}{stem}-{digest}"


@dataclass(frozen=True)
class Account:
    hub_name: str
    name: str
    uid: int
    gid: int
    home: Path


def ensure_group(name: str) -> int:
    """The group's gid, creating it (``groupadd``) if missing."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", name], check=True, capture_output=True)
        return grp.getgrnam(name).gr_gid


def _entry(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def ensure_account(hub_name: str, *, homes: Path | str, prefix: str = "jupyter-", students_group: str,
                   extra_groups: tuple[str, ...] = ()) -> Account:
    """The hub user's Unix account, created on first use: ``useradd`` with the comment, the students' group and
    ``extra_groups`` (a teacher's group), home ``homes/<unix name>`` created mode 0700 and owned by the account.

    Raises:
        ValueError: a bad hub name (see :func:`unix_name`), or an account of that Unix name exists that this hub did
            not make for ``hub_name`` (nothing is changed).
        PermissionError: not root.
    """
    name = unix_name(hub_name, prefix)
    homes = Path(homes)
    if os.geteuid() != 0:
        raise PermissionError("creating Unix accounts for students needs the hub to run as root")
    comment = COMMENT.format(name=hub_name)
    entry = _entry(name)
    if entry is not None and entry.pw_gecos != comment:
        raise ValueError(f"hub user {hub_name!r} maps to the Unix account {name!r}, which already exists and was not "
                         f"made by this hub for {hub_name!r} (its comment: {entry.pw_gecos!r}); refusing to use it")
    student_gid = ensure_group(students_group)
    gids = [ensure_group(g) for g in extra_groups]
    home = homes / name
    if entry is None:
        homes.mkdir(parents=True, exist_ok=True)
        homes.chmod(0o711)
        cmd = ["useradd", "--comment", comment, "--home-dir", str(home), "--no-create-home", "--shell",
               DEFAULT_SHELL, "--user-group", "--groups", ",".join([students_group, *extra_groups]), name]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"useradd for {hub_name!r} ({name}) failed: {done.stderr.strip()}")
        entry = pwd.getpwnam(name)
    else:
        member_of = {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
        missing = [g for g, gid in zip(extra_groups, gids) if gid not in member_of]
        if student_gid not in member_of:
            missing.insert(0, students_group)
        if missing:
            subprocess.run(["usermod", "--append", "--groups", ",".join(missing), name], check=True,
                           capture_output=True)
    if Path(entry.pw_dir) != home:
        raise ValueError(f"the account {name!r} has home {entry.pw_dir}, not {home}: it was made for another homes "
                         "folder (EXPLORER_HUB_HOMES changed?)")
    if not home.exists():
        home.mkdir(mode=0o700)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)  # also when a home was loosened by hand
    return Account(hub_name=hub_name, name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=home)


def remove_accounts(prefix: str, *, remove_homes: bool = True) -> list[str]:
    """Delete every account this hub made under ``prefix`` (comment starting ``explorer-hub ``), and their homes;
    for tests and for a teacher ending a class. Returns the names removed."""
    removed = []
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix) and entry.pw_gecos.startswith(COMMENT.split("{")[0]):
            subprocess.run(["pkill", "-KILL", "-u", entry.pw_name], capture_output=True)
            subprocess.run(["userdel", entry.pw_name], capture_output=True)
            if remove_homes:
                shutil.rmtree(entry.pw_dir, ignore_errors=True)
            removed.append(entry.pw_name)
    return removed
