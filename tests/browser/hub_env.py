"""What a hub with one Unix user per student needs from the machine, made once per test session and always removed:
the students' environment (``explorer.deploy.shared_env``, root-owned, in a fresh folder under /tmp), a Unix name
prefix of its own (``xh<hex>-``) so the accounts the hubs create cannot collide with real ones, and their groups.
At the end every account with that prefix, its home, its groups and the hubs' memory cgroups are deleted."""

from __future__ import annotations

import contextlib
import grp
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from explorer.deploy import shared_env
from explorer.deploy.accounts import remove_accounts
from explorer.deploy.cgroups import memory_cgroups


@dataclass
class ClassEnv:
    env: Path           # the students' environment
    prefix: str         # Unix name prefix of this session's accounts
    public: Path        # a folder every user can enter: homes and exchanges of this session's hubs go here
    install_s: float

    @property
    def students_group(self) -> str:
        return f"{self.prefix}students"

    @property
    def teachers_group(self) -> str:
        return f"{self.prefix}teachers"

    def user_prefix(self, name: str) -> str:
        """The Unix name prefix of hub ``name``'s accounts: the session's and the hub's first three letters, so two
        hubs of a session (each with its own homes folder) never share an account."""
        return f"{self.prefix}{name[:3]}-"

    def hub_settings(self, name: str) -> dict[str, str]:
        """EXPLORER_HUB_* settings of a users-mode hub called ``name``: its own homes folder, accounts and memory
        cgroup."""
        return {"EXPLORER_HUB_ISOLATION": "users", "EXPLORER_HUB_ENV": str(self.env),
                "EXPLORER_HUB_HOMES": str(self.public / name / "homes"),
                "EXPLORER_HUB_USER_PREFIX": self.user_prefix(name),
                "EXPLORER_HUB_STUDENTS_GROUP": self.students_group, "EXPLORER_HUB_TEACHERS_GROUP": self.teachers_group,
                "EXPLORER_HUB_CGROUP": self.cgroup(name), "EXPLORER_HUB_RUNTIME": str(self.public / f"rt-{name[:3]}")}

    def cgroup(self, name: str) -> str:
        return f"explorer-test-{self.prefix}{name}"

    def remove_cgroups(self, name: str) -> None:
        groups = memory_cgroups(self.cgroup(name))
        if groups is not None:
            for _ in range(20):  # a killed process leaves its cgroup a moment later
                groups.remove_all()
                if not groups.base.exists():
                    break
                time.sleep(0.25)


@contextlib.contextmanager
def class_environment() -> Iterator[ClassEnv]:
    prefix = f"xh{secrets.token_hex(2)}-"
    public = Path(tempfile.mkdtemp(prefix="xhub"))  # short: kernels' socket paths live under it
    public.chmod(0o711)
    start = time.perf_counter()
    env = Path(tempfile.mkdtemp(prefix="explorer-hub-env-"))
    env.rmdir()  # install() creates it
    try:
        shared_env.install(env)
        yield ClassEnv(env=env, prefix=prefix, public=public, install_s=time.perf_counter() - start)
    finally:
        remove_accounts(prefix)
        for group in (f"{prefix}students", f"{prefix}teachers"):
            with contextlib.suppress(KeyError):
                grp.getgrnam(group)
                subprocess.run(["groupdel", group], capture_output=True)
        shutil.rmtree(env, ignore_errors=True)
        shutil.rmtree(public, ignore_errors=True)


def needs_root() -> str | None:
    return None if os.geteuid() == 0 else "per-student Unix accounts need root (useradd, setuid); CI runs as root"
