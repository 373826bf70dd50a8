"""Every lesson's exercises carry nbgrader metadata: solutions editable, checks graded and locked, instructions
locked (explorer.classroom). This checks the metadata nbgrader reads; tests/classroom runs nbgrader itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer.classroom import BEGIN, END, POINTS, exercise_cells, mark_exercises

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_lesson_is_marked(path):
    nb = load(path)
    assert mark_exercises(nb, path.stem.split("_")[0]) == nb, "run: python -m explorer.classroom mark " + str(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_solution_has_a_graded_locked_check(path):
    nb = load(path)
    cells = nb["cells"]
    pairs = exercise_cells(nb)
    assert len(pairs) >= 3  # every lesson ends with at least three exercises
    for solution, check in pairs:
        s, c = cells[solution]["metadata"]["nbgrader"], cells[check]["metadata"]["nbgrader"]
        assert s["solution"] and not s["grade"] and not s["locked"]
        assert c["grade"] and c["locked"] and not c["solution"] and c["points"] == POINTS > 0
        assert "assert" in "".join(cells[check]["source"])
    # only those cells are solutions or graded: nbgrader would clear or grade nothing else
    marked = {i for pair in pairs for i in pair}
    for i, cell in enumerate(cells):
        meta = cell["metadata"].get("nbgrader")
        if i not in marked and meta is not None:
            assert not meta["solution"] and not meta["grade"] and meta["locked"], i
    # every solution's text sits between the markers: a student copy keeps nothing of it
    for solution, _check in pairs:
        text = "".join(cells[solution]["source"])
        assert text.count(BEGIN) == text.count(END) == 1 and text.index(BEGIN) < text.index(END)


def test_grade_ids_are_unique_across_lessons():
    ids = [cell["metadata"]["nbgrader"]["grade_id"] for path in NOTEBOOKS for cell in load(path)["cells"]
           if "nbgrader" in cell["metadata"]]
    assert len(ids) == len(set(ids)) >= 4 * 3 * 2


def test_bad_notebooks_are_refused_by_name():
    code = lambda text: {"cell_type": "code", "metadata": {}, "source": text}  # noqa: E731
    with pytest.raises(ValueError, match="without"):
        exercise_cells({"cells": [code(BEGIN + "\nx = 1")]})
    with pytest.raises(ValueError, match="followed by a code cell that checks it"):
        exercise_cells({"cells": [code(f"{BEGIN}\nx = 1\n{END}"), code("print(x)")]})
    with pytest.raises(ValueError, match="would read it as a marker"):  # nbgrader matches the words anywhere
        exercise_cells({"cells": [{"cell_type": "markdown", "metadata": {}, "source": "Write between BEGIN SOLUTION"}]})
    with pytest.raises(ValueError, match="'cells' list"):
        exercise_cells({"cells": None})
    with pytest.raises(ValueError, match="prefix"):
        mark_exercises({"cells": []}, "Lesson 1")
