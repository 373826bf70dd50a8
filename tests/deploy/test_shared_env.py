"""The students' environment: what makes one unsafe (problems), and what install refuses before touching anything.
Building a real one (about 30 s) is done once per browser test session (tests/browser/hub_env.py) and checked there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from explorer.deploy import shared_env
from explorer.deploy.shared_env import REPO, install, problems

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="root-owned environments need root (CI runs as root)")


def fake_env(base: Path) -> Path:
    """A tree shaped like an installed environment: INSTALLED.json and env/bin/python -> the system interpreter."""
    prefix = base / "env-prefix"
    (prefix / "env" / "bin").mkdir(parents=True)
    (prefix / "src").mkdir()
    os.symlink("/usr/bin/python3", prefix / "env" / "bin" / "python")
    (prefix / shared_env.INSTALLED).write_text(json.dumps({}))
    for path in (base, prefix, prefix / "env", prefix / "env" / "bin", prefix / "src"):
        path.chmod(0o755)
    return prefix


@root_only
def test_a_locked_down_tree_has_no_problems_and_each_loosening_is_named(tmp_path):
    tmp_path.chmod(0o755)
    prefix = fake_env(tmp_path)
    os.chmod(prefix / shared_env.INSTALLED, 0o644)
    # pytest's tmp folders sit in /tmp/pytest-of-root (mode 0700): others cannot enter it
    found = problems(prefix)
    blocked = [p for p in found if "cannot be entered by other users" in p]
    assert blocked and all("cannot be entered" in p or "cannot be run" in p for p in found), found
    (prefix / "src").chmod(0o777)
    assert any(str(prefix / "src") in p and "0o777" in p for p in problems(prefix))
    (prefix / "src").chmod(0o755)
    os.chown(prefix / "env", 65534, 65534)
    assert any(str(prefix / "env") in p and "uid 65534" in p for p in problems(prefix, deep=True))


def test_missing_environment_says_how_to_build_it(tmp_path):
    assert problems(tmp_path / "nothing") == [f"{tmp_path / 'nothing'} holds no students' environment: "
                                              "run 'make hub-env' (as root)"]
    assert "not an absolute path" in problems(Path("relative"))[0]


@root_only
@pytest.mark.parametrize("prefix, match", [
    ("relative/env", "absolute path"),
    (str(REPO / "build" / "students-env"), "inside"),
])
def test_install_refuses_bad_prefixes_before_doing_anything(prefix, match):
    with pytest.raises(ValueError, match=match):
        install(prefix)
    assert not (REPO / "build" / "students-env").exists()


@root_only
def test_install_refuses_a_folder_others_cannot_enter(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(ValueError, match="other users cannot enter"):
        install(private / "env")
    assert not (private / "env").exists()


@root_only
def test_install_refuses_an_interpreter_of_another_minor_version(tmp_path, monkeypatch):
    public = Path("/tmp") / f"explorer-unit-{os.getpid()}"
    public.mkdir(mode=0o755, exist_ok=True)
    try:
        versions = iter(["3.11", "3.12"])
        monkeypatch.setattr(shared_env, "_python_version", lambda python: next(versions))
        with pytest.raises(ValueError, match="is Python 3.12"):
            install(public / "env")
        assert not (public / "env").exists()
    finally:
        public.rmdir()
