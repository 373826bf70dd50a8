"""The environment students' servers run from: a root-owned, read-only copy of the project and its environment in a
folder every user can execute, e.g. ``/opt/attention-conv-explorer``.

Why: the development environment (``.venv``) and the repository usually live in a private home (``/root`` is mode
0700), which another Unix user cannot even enter, and the venv's interpreter may itself sit in a private folder
(pyenv's ``~/.pyenv``). A hub that runs each student as their own Unix user needs an environment that every student
can run and none can change (JupyterHub's security overview: users must not be able to modify the environment other
users' kernels import). ``make hub-env`` (root) builds it; the hub refuses to start students' servers from anything
else (:func:`problems`).

What :func:`install` does, in a staging folder beside ``prefix`` that replaces ``prefix`` at the end:

* ``src/``: the files of the project that run (``explorer/``, ``kernels/``, ``assets/``, ``notebooks/``,
  ``pyproject.toml``, ``README.md``), copied, not linked: the repository can change (or be private) while a class runs;
* ``env/``: a virtual environment made by ``python`` (default ``/usr/bin/python3``: a system interpreter every user
  can execute, same minor version as ``.venv``'s), holding ``.venv``'s installed packages (hard links when on the
  same file system, so it costs seconds and little disk), its ``share/`` and ``etc/`` (Jupyter's kernels, lab
  extensions, server-extension switches), its console scripts with their ``#!`` line pointing at the new
  interpreter, and the project installed from ``src/`` (editable, as in development, so ``assets/`` is found beside
  the package);
* bytecode compiled ahead (students cannot write ``__pycache__``; without it every import would compile again);
* everything owned by root, nothing writable by group or others, everything readable and executable by all;
* ``INSTALLED.json``: where it came from (commit, time, interpreter).

Then it runs ``python -c 'import explorer, torch, ...'`` as the unprivileged user ``nobody`` and checks that
``nobody`` cannot create a file anywhere in it.

Run ``python -m explorer.deploy.shared_env /opt/attention-conv-explorer`` (what ``make hub-env`` does) after
changing the code or the environment; a running hub keeps serving (servers started later use the new copy).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_ITEMS = ("explorer", "kernels", "assets", "notebooks", "pyproject.toml", "README.md")
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints", "_artifacts", "*.pyc")
PROJECT_DIST = "attention_conv_explorer"
CHECK_IMPORTS = "import explorer, explorer.apps, explorer.kernels, torch, jupyterhub, nbgrader, voila, jupyterlab"
DEFAULT_PYTHON = "/usr/bin/python3"
__all__ = ["install", "problems", "env_python", "INSTALLED"]
INSTALLED = "INSTALLED.json"


def env_python(prefix: Path | str) -> Path:
    return Path(prefix) / "env" / "bin" / "python"


def _run(cmd: Sequence[str], **kwargs) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
    return done.stdout


def _reachable_by_all(path: Path) -> str | None:
    """None when every user can reach ``path`` (each folder above it has o+x); else the first folder that stops them."""
    for folder in reversed([path, *path.parents] if path.is_dir() else list(path.parents)):
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return str(folder)
    return None


def _python_version(python: str | Path) -> str:
    return _run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).strip()


def _copy_tree(src: Path, dst: Path) -> None:
    """Hard links when the file system allows (seconds for a few GB), else a copy."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        _run(["cp", "-al", f"{src}/.", str(dst)])
    except RuntimeError:
        _run(["cp", "-a", f"{src}/.", str(dst)])


def _rewrite_scripts(old_bin: Path, new_bin: Path, new_python: Path) -> int:
    """Copy ``old_bin``'s console scripts whose ``#!`` names ``old_bin/python``, pointing them at ``new_python``."""
    count = 0
    old = f"#!{old_bin / 'python'}".encode()
    for script in sorted(old_bin.iterdir()):
        target = new_bin / script.name
        if target.exists() or script.is_symlink() or not script.is_file():
            continue  # the new venv's own python links and activate scripts
        data = script.read_bytes()
        first, _, rest = data.partition(b"\n")
        if not (first == old or first.startswith(old + b" ") or first.startswith(old + b"3")):
            continue  # not a Python console script of this venv
        target.write_bytes(f"#!{new_python}".encode() + b"\n" + rest)
        target.chmod(0o755)
        count += 1
    return count


def _lock_down(root: Path) -> None:
    """root:root, no write for group or others, read (and execute for folders/executables) for all."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files, None]:
            path = Path(folder) if name is None else Path(folder) / name
            if path.is_symlink():
                os.lchown(path, 0, 0)
                continue
            info = path.stat()
            os.chown(path, 0, 0)
            mode = stat.S_IMODE(info.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID)
            mode |= stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
            if path.is_dir() or mode & stat.S_IXUSR:
                mode |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            if mode != stat.S_IMODE(info.st_mode):
                path.chmod(mode)


def problems(prefix: Path | str, *, deep: bool = False) -> list[str]:
    """Why ``prefix`` is not a safe environment for students (empty list: it is). Checks that it was installed
    (``INSTALLED.json``), that every user can reach and run its interpreter, and that it and the folders above it are
    owned by root and not writable by others; ``deep`` checks every file (a few seconds), else the top levels."""
    prefix = Path(prefix)
    found: list[str] = []
    if not prefix.is_absolute():
        return [f"{prefix} is not an absolute path"]
    if not (prefix / INSTALLED).is_file() or not env_python(prefix).exists():
        return [f"{prefix} holds no students' environment: run 'make hub-env' (as root)"]
    blocked = _reachable_by_all(prefix)
    if blocked:
        found.append(f"{blocked} cannot be entered by other users (mode {oct(os.stat(blocked).st_mode & 0o777)})")
    for folder in [prefix, *prefix.parents]:
        info = os.stat(folder)
        sticky = info.st_mode & stat.S_ISVTX
        if info.st_uid != 0 or (info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (sticky and folder != prefix)):
            found.append(f"{folder} is owned by uid {info.st_uid} with mode {oct(info.st_mode & 0o7777)}: it must be "
                         "root's and not writable by others")
    interpreter = env_python(prefix).resolve()
    blocked = _reachable_by_all(interpreter) or (None if os.stat(interpreter).st_mode & stat.S_IXOTH else str(interpreter))
    if blocked:
        found.append(f"the interpreter {interpreter} cannot be run by other users ({blocked})")
    walk = os.walk(prefix) if deep else [(str(prefix), [p.name for p in prefix.iterdir() if p.is_dir()], [])]
    for folder, dirs, files in walk:
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            info = path.stat()
            if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                found.append(f"{path} is uid {info.st_uid}, mode {oct(info.st_mode & 0o7777)}")
                if len(found) > 20:
                    return found
    return found


def install(prefix: Path | str, *, venv: Path | str = REPO / ".venv", repo: Path | str = REPO,
            python: Path | str = DEFAULT_PYTHON, check_user: str = "nobody") -> dict:
    """Build the students' environment at ``prefix`` (see the module docstring); returns ``INSTALLED.json``'s content.

    Raises:
        PermissionError: not run as root (only root can make files that students cannot change).
        ValueError: ``prefix`` relative, inside a folder other users cannot enter, or inside ``repo``/``venv``;
            ``python`` not runnable by other users or of another minor version than ``venv``'s.
    """
    prefix, venv, repo = Path(prefix), Path(venv).absolute(), Path(repo).resolve()
    if os.geteuid() != 0:
        raise PermissionError("building the students' environment needs root (sudo make hub-env): only root can "
                              "make files that no student can change")
    if not prefix.is_absolute():
        raise ValueError(f"prefix={prefix}: give an absolute path such as /opt/attention-conv-explorer")
    prefix = prefix.resolve()
    if prefix == repo or repo in prefix.parents or venv in prefix.parents:
        raise ValueError(f"prefix={prefix} is inside {repo}: choose a folder outside the repository")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    blocked = _reachable_by_all(prefix.parent)
    if blocked:
        raise ValueError(f"prefix={prefix}: other users cannot enter {blocked}; choose a folder such as /opt/...")
    python = Path(shutil.which(str(python)) or python)
    blocked = _reachable_by_all(python.resolve())
    if blocked or not os.stat(python.resolve()).st_mode & stat.S_IXOTH:
        raise ValueError(f"python={python}: other users cannot run it ({blocked or python.resolve()}); use a system "
                         "interpreter such as /usr/bin/python3")
    wanted, have = _python_version(venv / "bin" / "python"), _python_version(python)
    if wanted != have:
        raise ValueError(f"python={python} is Python {have}; {venv} was built with {wanted} (its compiled packages "
                         "need the same minor version)")

    staging = prefix.with_name(f".{prefix.name}.partial-{os.getpid()}")
    old = prefix.with_name(f".{prefix.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    placed = False
    try:
        staging.mkdir(mode=0o755)
        for item in SOURCE_ITEMS:
            source = repo / item
            if source.is_dir():
                shutil.copytree(source, staging / "src" / item, ignore=IGNORE)
            else:
                (staging / "src").mkdir(exist_ok=True)
                shutil.copy2(source, staging / "src" / item)
        _run([str(python), "-m", "venv", "--without-pip", str(staging / "env")])
        site = f"lib/python{wanted}/site-packages"
        _copy_tree(venv / site, staging / "env" / site)
        for extra in ("share", "etc"):
            if (venv / extra).is_dir():
                _copy_tree(venv / extra, staging / "env" / extra)
        scripts = _rewrite_scripts(venv / "bin", staging / "env" / "bin", env_python(prefix))
        # the development install points into the repository: drop it, reinstall from src/ once in place
        for path in (staging / "env" / site).iterdir():
            if PROJECT_DIST in path.name.replace("-", "_") and (path.name.startswith("__editable__")
                                                               or path.name.endswith(".dist-info")):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        if prefix.exists():
            prefix.rename(old)
        staging.rename(prefix)
        placed = True
        _run([str(env_python(prefix)), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
              "--no-index", "--disable-pip-version-check", "-e", str(prefix / "src")],
             env={**os.environ, "PIP_NO_CACHE_DIR": "1"})
        for leftover in (prefix / "src").glob("*.egg-info"):
            shutil.rmtree(leftover)
        shutil.rmtree(prefix / "src" / "build", ignore_errors=True)
        # exit status ignored: a few test files in site-packages are for newer Pythons and do not compile
        subprocess.run([str(env_python(prefix)), "-m", "compileall", "-q", "-j", "0", str(prefix / "src"),
                        str(prefix / "env" / site)], capture_output=True)
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        record = {"installed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "commit": head.stdout.strip() or None, "from_venv": str(venv), "python": str(python),
                  "python_version": have, "console_scripts": scripts}
        (prefix / INSTALLED).write_text(json.dumps(record, indent=2) + "\n")
        _lock_down(prefix)
        _verify(prefix, check_user)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if placed:
            shutil.rmtree(prefix, ignore_errors=True)
        if old.exists():
            old.rename(prefix)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return record


def _verify(prefix: Path, user: str) -> None:
    """As ``user``: the environment imports, and no file can be created in it."""
    found = problems(prefix, deep=True)
    if found:
        raise RuntimeError("the students' environment is not locked down:\n" + "\n".join(found))
    probe = ("import os, sys\n" + CHECK_IMPORTS + "\n"
             "bad = []\n"
             "for folder, dirs, files in os.walk(sys.argv[1]):\n"
             "    if os.access(folder, os.W_OK): bad.append(folder)\n"
             "print(len(bad), bad[:3])\n")
    out = _run(["runuser", "-u", user, "--", str(env_python(prefix)), "-c", probe, str(prefix)], cwd="/")
    if not out.startswith("0 "):
        raise RuntimeError(f"{user} can write in the students' environment: {out}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.deploy.shared_env", description=__doc__.split("\n")[0])
    parser.add_argument("prefix", type=Path, help="where to install, e.g. /opt/attention-conv-explorer")
    parser.add_argument("--venv", type=Path, default=REPO / ".venv", help="the environment to copy (default .venv)")
    parser.add_argument("--python", default=DEFAULT_PYTHON, help="interpreter every user can run (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="only report what is wrong with an existing one")
    args = parser.parse_args(argv)
    if args.check:
        found = problems(args.prefix, deep=True)
        print("\n".join(found) or f"{args.prefix}: root-owned, read-only, runnable by every user")
        return 1 if found else 0
    try:
        record = install(args.prefix, venv=args.venv, python=args.python)
    except (PermissionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"students' environment ready in {args.prefix}: {json.dumps(record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
