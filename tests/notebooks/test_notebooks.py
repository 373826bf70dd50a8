"""Lesson notebooks keep their shape: exercises with checked answers, small stored outputs, no logic in the dashboard.

nbval itself runs the notebooks (``make test-notebooks``); these checks keep them fit for that and for teachers.
"""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.notebooks.env_check import SOURCE as ENV_CHECK
from tests.notebooks.store_outputs import CHECK

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
LESSONS = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_lessons_exist():
    assert [p.name for p in LESSONS][:1] == ["01_receptive_fields.ipynb"]
    assert (NOTEBOOKS / "dashboard.ipynb").exists() and (NOTEBOOKS / "voila.json").exists()


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_exercises_have_solutions_and_checks(path):
    cells = _code(nbformat.read(path, as_version=4))
    solutions = [i for i, c in enumerate(cells) if "### BEGIN SOLUTION" in c.source]
    assert len(solutions) >= 3, "at least three exercises"
    for i in solutions:
        assert "### END SOLUTION" in cells[i].source
        assert "assert" in cells[i + 1].source, f"the cell after exercise cell {i} must check the answer"


@pytest.mark.parametrize("path", [*LESSONS, NOTEBOOKS / "dashboard.ipynb"], ids=lambda p: p.name)
def test_outputs_stored_only_where_nbval_checks(path):
    nb = nbformat.read(path, as_version=4)
    assert "widgets" not in nb.metadata, "no stored widget state"
    for cell in _code(nb):
        if cell.outputs:
            assert CHECK in cell.source, f"stored output in an unchecked cell: {cell.source[:60]!r}"
            assert cell.execution_count is not None, "nbval only compares cells that ran"
    assert path.stat().st_size < 200_000


def test_dashboard_only_instantiates_apps():
    cells = _code(nbformat.read(NOTEBOOKS / "dashboard.ipynb", as_version=4))
    assert len(cells) == 2 and cells[0].source == ENV_CHECK and cells[1].source.strip().splitlines() == [
        "from explorer.apps import dashboard", "", "dashboard()"]


@pytest.mark.parametrize("path", [*LESSONS, NOTEBOOKS / "dashboard.ipynb"], ids=lambda p: p.name)
def test_first_code_cell_checks_the_kernel(path):
    assert _code(nbformat.read(path, as_version=4))[0].source == ENV_CHECK


def test_kernel_without_the_project_gets_one_sentence():
    # the base interpreter with no site-packages at all stands in for a kernel that lacks the project
    base = getattr(sys, "_base_executable", sys.executable)
    run = subprocess.run([base, "-I", "-S", "-c", ENV_CHECK], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.count("Traceback") == 1 and "During handling" not in run.stderr  # one error, no chain
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: This kernel lacks explorer, torch, ipywidgets, plotly, anywidget, "
                           "bokeh: open the notebooks with `make lab` in the repository")
    assert last.count(". ") == 0 and last.endswith("environment).")  # one sentence


def test_kernel_with_the_project_passes_silently(capsys):
    exec(compile(ENV_CHECK, "env_check", "exec"), {})
    assert capsys.readouterr() == ("", "")
