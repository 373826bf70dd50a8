"""A student's memory cgroup: the limit holds for all their processes together, and past it the OOM killer ends a
process inside it (checked with real processes; needs a writable memory cgroup, as on the CI machines)."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest

from explorer.deploy.cgroups import memory_cgroups


@pytest.fixture
def groups():
    found = memory_cgroups(f"explorer-unit-{secrets.token_hex(3)}")
    if found is None:
        pytest.skip("no writable memory cgroup on this machine (the hub then falls back to RLIMIT_DATA)")
    yield found
    found.remove_all()


def test_limit_is_set_and_reported(groups):
    folder = groups.prepare("ada", 300 * 1024**2)
    assert groups.limit(folder) == 300 * 1024**2
    folder = groups.prepare("ada", 200 * 1024**2)  # shrinking works too (v1: memory before memsw)
    assert groups.limit(folder) == 200 * 1024**2
    assert "per student" in groups.describe()


def test_processes_past_the_limit_together_are_killed_inside_the_group(groups):
    folder = groups.prepare("ada", 256 * 1024**2)
    hog = ("b = bytearray(100 * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"
           "import time; time.sleep(3)")
    # three processes of 100 MB each: each one alone is under the limit, together they are over it
    procs = [subprocess.Popen([sys.executable, "-c", hog], preexec_fn=lambda: groups.enter(folder))
             for _ in range(3)]
    codes = [p.wait(timeout=60) for p in procs]
    assert -9 in codes, codes
    assert groups.oom_kills(folder) >= 1
    # a process outside the group allocating the same is untouched
    assert subprocess.run([sys.executable, "-c", hog.replace("sleep(3)", "sleep(0)")]).returncode == 0
