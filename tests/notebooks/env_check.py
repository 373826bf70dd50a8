"""The first code cell of every notebook: one clear sentence when the kernel lacks the project.

A notebook opened with a kernel that is not the project's (another environment, a fresh conda base) would
otherwise fail on its imports one ImportError after another. This cell only uses the standard library, so it runs
anywhere; ``tests/notebooks/test_notebooks.py`` checks every notebook starts with it and that it fails as promised.

    python tests/notebooks/env_check.py notebooks/*.ipynb    # (re)insert the cell
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

REQUIRED = ("explorer", "torch", "ipywidgets", "plotly", "anywidget", "bokeh")

SOURCE = f"""\
# Does this kernel have the project? (Standard library only: it runs in any Python.)
import importlib.util
_missing = [name for name in {REQUIRED!r} if importlib.util.find_spec(name) is None]
if _missing:
    raise ModuleNotFoundError(
        f"This kernel lacks {{', '.join(_missing)}}: open the notebooks with `make lab` in the repository, which "
        "installs the project and starts JupyterLab on its kernel (or pip install -e '.[dashboard,pretrained]' "
        "into this kernel's environment).")"""


def insert(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if nb.cells[code[0]].source.startswith(SOURCE.splitlines()[0]):
        nb.cells[code[0]].source = SOURCE
    else:
        cell = nbformat.v4.new_code_cell(SOURCE)
        cell.pop("id", None)
        nb.cells.insert(code[0], cell)
    nbformat.write(nb, path)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        insert(Path(name))
