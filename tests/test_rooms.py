"""Rooms that say what they hold: loading a shipped model or result never imports its training code.

``explorer/train`` trains and writes ``assets/``; the dashboard tabs, the notebooks' apps and the model loaders read
what it wrote through ``explorer.models`` (the shipped models, their constants, results and evaluation sets). Two
checks: importing every tab, the dashboard and every ``explorer.models`` module in a fresh interpreter leaves no
``explorer.train`` module in ``sys.modules``; and no module outside ``explorer/train`` imports ``explorer.train``,
not even inside a function (a loader that runs when a tab is built, or an analysis an app calls).
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import explorer
import explorer.apps
import explorer.models

PACKAGE = Path(explorer.__file__).resolve().parent


def _modules(package) -> list[str]:
    return sorted(f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_"))


def test_tabs_and_loaders_do_not_import_training_code():
    modules = ["explorer.apps.dashboard", *_modules(explorer.apps), *_modules(explorer.models)]
    script = (
        "import importlib, json, sys\n"
        f"modules = {modules!r}\n"
        "offenders = {}\n"
        "for name in modules:\n"
        "    before = set(sys.modules)\n"
        "    importlib.import_module(name)\n"
        "    new = sorted(m for m in set(sys.modules) - before if m == 'explorer.train' or "
        "m.startswith('explorer.train.'))\n"
        "    if new:\n"
        "        offenders[name] = new\n"
        "print(json.dumps(offenders))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    offenders = json.loads(done.stdout.strip().splitlines()[-1])
    assert not offenders, ("importing these modules imports training code (module: the explorer.train modules it "
                           f"pulled in first): {offenders}")


def _train_imports(path: Path) -> list[str]:
    """``line: statement`` of every import of ``explorer.train`` in ``path``, at any depth (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if any(n == "explorer.train" or n.startswith("explorer.train.") for n in names):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_outside_train_imports_training_code():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "train":
            continue
        found = _train_imports(path)
        if found:
            offenders[str(relative)] = found
    assert not offenders, ("modules outside explorer/train import training code (load shipped models and results "
                           f"through explorer.models instead): {json.dumps(offenders, indent=1)}")
