"""Memory limits per student with cgroups, where the machine lets the hub make them.

A student's server is started inside a memory cgroup of its own (``<the hub's cgroup>/explorer-hub/<unix name>``);
the server, its kernels, terminals and anything they start stay in it, so the limit covers the student's processes
*together* (three kernels share one limit). Past it, the kernel's OOM killer picks a process of that student's cgroup
only -- usually the largest, the offending kernel -- and nobody else's. Swap is counted too (v1 ``memsw``, v2
``memory.swap.max = 0``), so a student cannot push the machine into swap instead.

cgroup v2 (one unified hierarchy with the memory controller enabled) and v1 (a ``memory`` hierarchy) are both
handled. Where neither can be written (an unprivileged container, a read-only ``/sys/fs/cgroup``),
:func:`memory_cgroups` returns None and the hub falls back to the per-process ``RLIMIT_DATA`` and says so at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemoryCgroups", "memory_cgroups"]

ROOT = Path("/sys/fs/cgroup")
GROUP = "explorer-hub"


def _own_path(controller: str | None) -> str:
    """This process's cgroup path in the v1 hierarchy of ``controller`` (or v2 when None), from /proc/self/cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if controller is None and number == "0" and controllers == "":
            return path
        if controller is not None and controller in controllers.split(","):
            return path
    raise FileNotFoundError(f"no {controller or 'v2'} line in /proc/self/cgroup")


@dataclass(frozen=True)
class MemoryCgroups:
    """Where the students' cgroups live and which interface they speak."""

    base: Path      # .../explorer-hub
    version: int    # 1 or 2

    def describe(self) -> str:
        return f"cgroup v{self.version} memory limit per student (all their processes together), under {self.base}"

    def prepare(self, name: str, limit: int) -> Path:
        """Create (or reuse) ``name``'s cgroup with ``limit`` bytes of memory and no swap; returns its folder."""
        folder = self.base / name
        folder.mkdir(exist_ok=True)
        if self.version == 2:
            (folder / "memory.max").write_text(str(limit))
            if (folder / "memory.swap.max").exists():
                (folder / "memory.swap.max").write_text("0")
            if (folder / "memory.oom.group").exists():
                (folder / "memory.oom.group").write_text("0")  # kill one process (the kernel), not the student's server
        else:
            # memsw (memory + swap) must stay >= memory: lower memsw last when shrinking, first when growing
            memsw = folder / "memory.memsw.limit_in_bytes"
            current = int((folder / "memory.limit_in_bytes").read_text())
            if memsw.exists() and limit > current:
                memsw.write_text(str(limit))
                (folder / "memory.limit_in_bytes").write_text(str(limit))
            else:
                (folder / "memory.limit_in_bytes").write_text(str(limit))
                if memsw.exists():
                    memsw.write_text(str(limit))
        return folder

    def limit(self, folder: Path) -> int:
        name = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        return int((folder / name).read_text())

    def oom_kills(self, folder: Path) -> int:
        """How many processes the OOM killer has ended in this cgroup (0 when the kernel does not say)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        path = folder / name
        if not path.exists():
            return 0
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    @staticmethod
    def enter(folder: Path) -> None:
        """Move the calling process into ``folder`` (call it in the child before exec, as root)."""
        (folder / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self, name: str) -> None:
        """Remove an empty student cgroup (after their server stopped); a busy one stays."""
        try:
            (self.base / name).rmdir()
        except OSError:
            pass

    def remove_all(self) -> None:
        for child in sorted(self.base.glob("*"), reverse=True):
            if child.is_dir():
                self.remove(child.name)
        try:
            self.base.rmdir()
        except OSError:
            pass


def _writable(base: Path, version: int) -> MemoryCgroups | None:
    try:
        base.mkdir(exist_ok=True)
        probe = MemoryCgroups(base, version)
        folder = probe.prepare(f".probe-{os.getpid()}", 1 << 30)
        ok = probe.limit(folder) == 1 << 30
        folder.rmdir()
        return probe if ok else None
    except OSError:
        return None


def memory_cgroups(group: str = GROUP) -> MemoryCgroups | None:
    """The students' cgroup parent under this process's own cgroup, if memory limits can be set there; else None."""
    if os.geteuid() != 0 or not ROOT.is_dir():
        return None
    unified = ROOT / "cgroup.controllers"
    if unified.exists() and "memory" in unified.read_text().split():
        own = ROOT / _own_path(None).lstrip("/")
        # v2: the memory controller must be enabled for the children of the hub's group's parent
        base = own / group
        try:
            base.mkdir(exist_ok=True)
            subtree = base / "cgroup.subtree_control"
            if "memory" not in subtree.read_text().split():
                subtree.write_text("+memory")
        except OSError:
            return None
        return _writable(base, 2)
    v1 = ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").exists() or (v1 / "cgroup.procs").exists():
        try:
            own = v1 / _own_path("memory").lstrip("/")
        except FileNotFoundError:
            return None
        return _writable(own / group, 1)
    return None

