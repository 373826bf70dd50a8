"""The hub's spawners: :class:`UserSpawner` runs each student's server as their own Unix user (the default for a hub
run as root); :class:`SharedAccountSpawner` runs every server as the hub's own OS user (``EXPLORER_HUB_ISOLATION=none``,
a demo among trusted people). Both enforce the memory limit; see ``jupyterhub_config.py`` for the settings.
"""

from __future__ import annotations

import inspect
import os
import resource
import stat
from collections.abc import Callable
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner, set_user_setuid
from traitlets import Any, Int, Set, Unicode, default

from explorer.deploy.accounts import Account, ensure_account
from explorer.deploy.cgroups import MemoryCgroups

__all__ = ["UserSpawner", "SharedAccountSpawner", "safe_home_name"]


def safe_home_name(name: str) -> str:
    """The user name as a folder name; refuse names that would escape the homes folder."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"user name {name!r} cannot be a home folder name")
    return name


def _limit_memory(limit: int | None) -> None:
    if limit:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


class SharedAccountSpawner(SimpleLocalProcessSpawner):
    """``SimpleLocalProcessSpawner`` (homes under the state directory, no OS accounts) that also *enforces*
    ``mem_limit`` per process with ``RLIMIT_DATA``."""

    @default("home_dir")
    def _default_home_dir(self) -> str:
        return self.home_dir_template.format(username=safe_home_name(self.user.name))

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        """Runs in the forked child, before exec: create and enter the home (the parent class), then set the
        limit. A failing ``setrlimit`` raises, so the spawn fails loudly instead of running unlimited."""
        enter_home = super().make_preexec_fn(name)
        limit = self.mem_limit

        def preexec() -> None:
            enter_home()
            _limit_memory(limit)

        return preexec


class UserSpawner(LocalProcessSpawner):
    """One Unix account per hub user (:mod:`explorer.deploy.accounts`), created on first spawn; the server runs as
    that account, in its 0700 home, inside the student's memory cgroup when the machine allows
    (:mod:`explorer.deploy.cgroups`), with ``RLIMIT_DATA`` per process and umask 077 (teachers 007)."""

    user_prefix = Unicode("jupyter-", help="prefix of every student's Unix name").tag(config=True)
    homes = Unicode(help="folder holding the accounts' homes (mode 0711)").tag(config=True)
    students_group = Unicode("jupyter-students", help="group every account of this hub joins").tag(config=True)
    teachers_group = Unicode("jupyter-teachers", help="group teachers' accounts join").tag(config=True)
    teachers = Set(Unicode(), help="hub names of the teachers").tag(config=True)
    cgroups = Any(None, help="explorer.deploy.cgroups.MemoryCgroups, or None for per-process limits only"
                  ).tag(config=True)
    runtime_root = Unicode("/run/explorer-hub", help="folder of the students' runtime folders (kernels' Unix sockets "
                           "and connection files), one per uid, mode 0700; short: a socket path has at most 107 "
                           "characters").tag(config=True)
    student_umask = Int(0o077).tag(config=True)
    teacher_umask = Int(0o007).tag(config=True)
    account: Account | None = None

    @property
    def is_teacher(self) -> bool:
        return self.user.name in self.teachers

    def _account(self) -> Account:
        if self.account is None or self.account.hub_name != self.user.name:
            self.account = ensure_account(self.user.name, homes=self.homes, prefix=self.user_prefix,
                                          students_group=self.students_group,
                                          extra_groups=(self.teachers_group,) if self.is_teacher else ())
        return self.account

    home_dir = Unicode(help="the account's home, set when the account is made (before the pre-spawn hook)")

    async def run_pre_spawn_hook(self):
        """Create the account and its home first (a bad or colliding name stops here, with nothing created), then
        the hook (copying the lessons), then hand the copies to the student."""
        account = self._account()
        self.home_dir = str(account.home)
        result = super().run_pre_spawn_hook()
        if inspect.isawaitable(result):
            result = await result
        for path in account.home.iterdir():
            info = path.lstat()
            if info.st_uid == 0 and not stat.S_ISLNK(info.st_mode):
                os.chown(path, account.uid, account.gid)
                path.chmod(0o600 if path.is_file() else 0o700)
        runtime = self.runtime_dir(account)
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(runtime, account.uid, account.gid)
        runtime.chmod(0o700)
        if self.cgroups is not None and self.mem_limit:
            self._cgroup = self.cgroups.prepare(account.name, self.mem_limit)
        return result

    def runtime_dir(self, account: Account) -> Path:
        return Path(self.runtime_root) / str(account.uid)

    def user_env(self, env: dict) -> dict:
        account = self._account()
        env["USER"] = env["LOGNAME"] = account.name
        env["HOME"] = str(account.home)
        env["JUPYTER_RUNTIME_DIR"] = str(self.runtime_dir(account))
        env["SHELL"] = "/bin/bash"
        return env

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        """In the child before exec, as root: join the student's cgroup, set the per-process limit and the umask,
        then become the student (groups, gid, uid) and enter their home."""
        account = self._account()
        become = set_user_setuid(account.name)
        folder = getattr(self, "_cgroup", None)
        limit, mask = self.mem_limit, self.teacher_umask if self.is_teacher else self.student_umask

        def preexec() -> None:
            if folder is not None:
                MemoryCgroups.enter(folder)
            _limit_memory(limit)
            os.umask(mask)
            become()

        return preexec

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        if self.cgroups is not None and self.account is not None:
            self.cgroups.remove(self.account.name)
