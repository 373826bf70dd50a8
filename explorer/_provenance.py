"""Where a shipped result came from: the git commit of the repository that produced it."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git_commit"]

ROOT = Path(__file__).resolve().parents[1]  # the repository (explorer/ is installed in place, editable)


def git_commit() -> str | None:
    """``HEAD`` of the repository, with ``-dirty`` when tracked files have uncommitted changes (untracked files do not
    count); None when git or the repository is missing (an installed copy without ``.git``)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
