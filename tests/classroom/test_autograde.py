"""nbgrader end to end on the shipped lessons: student copies, autograding into the real SQLite gradebook, and
submissions that try to break the grading (explorer.classroom).

Two students hand in every lesson: "alice" the teacher's copy (the solutions), "bob" the untouched student copy
(the stubs). Then five more hand in lesson 01 broken in the ways students break notebooks. The scores are read back
twice: through nbgrader's API (explorer.classroom.grades) and by plain SQL on gradebook.db, the independent
reference; the points they must add up to come from the notebooks' metadata.

Time: one release (about 13 s) and one notebook execution per lesson and student plus 5 hostile ones (about 10 s each on 2 cores).
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from explorer.classroom import (BEGIN, END, POINTS, autograde, collect, exercise_cells, grades, release,
                                solution_leaks, submit, write_course)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
LESSON_01 = "01_receptive_fields"
HOSTILE_TIMEOUT_S = 10  # per cell; every cell of lesson 01 takes < 3 s here, the never-ending one is cut at 10 s


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def checks(nb: dict) -> dict[str, int]:
    """``{grade id: points}`` of every graded cell, from the notebook's own metadata."""
    return {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"]["points"] for c in nb["cells"]
            if c["metadata"].get("nbgrader", {}).get("grade")}


def sql_scores(course: Path) -> dict[tuple[str, str, str], tuple[float, float]]:
    """``{(student, assignment, cell): (auto score, max score)}`` straight from nbgrader's SQLite tables."""
    with sqlite3.connect(course / "gradebook.db") as db:
        rows = db.execute("""
            SELECT sa.student_id, a.name, bc.name, g.auto_score, gc.max_score
            FROM grade g
            JOIN submitted_notebook sn ON g.notebook_id = sn.id
            JOIN submitted_assignment sa ON sn.assignment_id = sa.id
            JOIN assignment a ON sa.assignment_id = a.id
            JOIN base_cell bc ON g.cell_id = bc.id
            JOIN grade_cells gc ON gc.id = bc.id
            WHERE gc.cell_type = 'code'""").fetchall()
    return {(s, a, c): (score, best) for s, a, c, score, best in rows}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Every lesson released by the README's command (make student); alice hands in the solutions, bob the
    untouched stubs; both autograded."""
    root = tmp_path_factory.mktemp("course")
    made = subprocess.run(["make", "--no-print-directory", "student", f"COURSE={root}"], cwd=ROOT,
                          env={**os.environ, "MAKEFLAGS": ""}, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    released = {p.name: p for p in sorted((root / "release").iterdir())}
    for name, folder in released.items():
        assert f"{name}: student copy in {folder}" in made.stdout
    for source in sorted((root / "source").glob("*/*.ipynb")):
        submit(root, "alice", source)
    for folder in released.values():
        for copy_ in folder.glob("*.ipynb"):
            submit(root, "bob", copy_)
    rows = autograde(root)
    return root, released, rows


def test_release_makes_one_assignment_per_lesson(course):
    root, released, _ = course
    assert sorted(released) == [p.stem for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        assert (released[path.stem] / path.name).is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_solution_text_in_any_student_copy(course, path):
    root, released, _ = course
    original, student = load(path), load(released[path.stem] / path.name)
    text = json.dumps(student, ensure_ascii=False)
    assert BEGIN not in text and END not in text
    solutions = {i for i, _ in exercise_cells(original)}
    between = {}  # solution cell -> (lines before BEGIN, lines between the markers, lines after END)
    for i in solutions:
        text = "".join(original["cells"][i]["source"]).split("\n")
        b = next(k for k, line in enumerate(text) if BEGIN in line)
        e = next(k for k, line in enumerate(text) if END in line)
        between[i] = (text[:b], text[b + 1:e], text[e + 1:])
    elsewhere = {line.strip() for i, c in enumerate(original["cells"]) if i not in solutions
                 for line in "".join(c["source"]).split("\n")}
    elsewhere |= {line.strip() for before, _, after in between.values() for line in before + after}
    hidden = {line.strip() for _, inside, _ in between.values() for line in inside} - elsewhere - {""}
    assert len(hidden) >= len(solutions), "every solution has a line of its own to hide"
    for cell in student["cells"]:
        for line in "".join(cell["source"]).split("\n"):
            assert line.strip() not in hidden, f"solution line in the student copy: {line!r}"
    # each solution region became nbgrader's stub (code around the markers stays); the rest of the lesson is unchanged
    assert len(student["cells"]) == len(original["cells"])
    for i, (mine, theirs) in enumerate(zip(original["cells"], student["cells"])):
        expected = "".join(mine["source"])
        if i in solutions:
            before, _, after = between[i]
            expected = "\n".join(before + ["# YOUR CODE HERE", "raise NotImplementedError()"] + after)
        assert "".join(theirs["source"]) == expected, i


def test_the_leak_check_can_fail():
    source = {"cells": [{"cell_type": "code", "metadata": {}, "source": f"{BEGIN}\nanswer = 42\n{END}"},
                        {"cell_type": "code", "metadata": {}, "source": "assert answer == 42"}]}
    leaked = copy.deepcopy(source)
    leaked["cells"][0]["source"] = "# YOUR CODE HERE\nanswer = 42"
    stub = copy.deepcopy(source)
    stub["cells"][0]["source"] = "# YOUR CODE HERE\nraise NotImplementedError()"
    assert solution_leaks(source, leaked) == ["answer = 42"]
    assert solution_leaks(source, stub) == []


def test_every_check_passes_with_the_solution_and_fails_on_the_stub(course):
    _, _, rows = course
    expected = {(path.stem, cell) for path in NOTEBOOKS for cell in checks(load(path))}
    for student, passes in (("alice", True), ("bob", False)):
        mine = {(g.assignment, g.cell): g for g in rows if g.student == student}
        assert set(mine) == expected, student
        for key, g in mine.items():
            if passes:
                assert g.score == g.max_score == POINTS and g.message == "passed", (key, g.message)
            else:
                assert g.score == 0 and g.max_score == POINTS, key
                # the stub raised NotImplementedError, so the answer the check reads was never defined
                assert g.message.startswith("NameError") and "NotImplementedError" in g.message, (key, g.message)


def test_gradebook_scores_match_the_metadata_points(course):
    root, _, rows = course
    stored = sql_scores(root)
    assert {(g.student, g.assignment, g.cell): (g.score, g.max_score) for g in rows} == stored
    for path in NOTEBOOKS:
        points = checks(load(path))
        total = sum(points.values())
        assert total == POINTS * len(exercise_cells(load(path))) >= 3
        alice = sum(score for (s, a, _), (score, _) in stored.items() if (s, a) == ("alice", path.stem))
        bob = sum(score for (s, a, _), (score, _) in stored.items() if (s, a) == ("bob", path.stem))
        best = sum(m for (s, a, _), (_, m) in stored.items() if (s, a) == ("alice", path.stem))
        assert (alice, bob, best) == (total, 0, total), path.stem


# --- submissions that try to break the grading --------------------------------------------------------------

def _grade_id(cell: dict) -> str | None:
    return cell["metadata"].get("nbgrader", {}).get("grade_id")


def _index(nb: dict, grade_id: str) -> int:
    return [_grade_id(c) for c in nb["cells"]].index(grade_id)


def hostile_submissions(source: dict, stub: dict) -> dict[str, str | dict]:
    """Lesson 01 as students break it (each value a notebook, or raw text for a file that is not one)."""
    deleted = copy.deepcopy(source)  # a check cell and another exercise's answer cell deleted
    del deleted["cells"][_index(deleted, "01-ex2-check")]
    del deleted["cells"][_index(deleted, "01-ex3-answer")]
    reordered = copy.deepcopy(source)  # exercise 4 moved above the lesson's imports; check 1 above its answer
    moved = [reordered["cells"].pop(_index(reordered, g)) for g in ("01-ex4-answer", "01-ex4-check")]
    reordered["cells"][0:0] = moved
    check = reordered["cells"].pop(_index(reordered, "01-ex1-check"))
    reordered["cells"].insert(_index(reordered, "01-ex1-answer"), check)
    edited = copy.deepcopy(stub)  # the stubs left, every check cell edited to pass (its checksum no longer matches)
    for cell in edited["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade"):
            cell["source"] = "assert True"
    stuck = copy.deepcopy(source)  # answer 1 raises, answer 2 never ends; answers 3 and 4 are right
    stuck["cells"][_index(stuck, "01-ex1-answer")]["source"] = 'raise ValueError("I give up")'
    stuck["cells"][_index(stuck, "01-ex2-answer")]["source"] = "import time\nwhile True:\n    time.sleep(0.1)"
    return {"carol": deleted, "dave": reordered, "erin": edited, "frank": stuck,
            "gina": json.dumps(source)[:5000]}  # a truncated file: not JSON


@pytest.fixture(scope="module")
def hostile(course, tmp_path_factory):
    root, released, _ = course
    source = load(root / "source" / LESSON_01 / f"{LESSON_01}.ipynb")
    stub = load(released[LESSON_01] / f"{LESSON_01}.ipynb")
    folder = tmp_path_factory.mktemp("hand-ins")
    for student, nb in hostile_submissions(source, stub).items():
        path = folder / student / f"{LESSON_01}.ipynb"
        path.parent.mkdir()
        path.write_text(nb if isinstance(nb, str) else json.dumps(nb), encoding="utf-8")
        submit(root, student, path)
    before = sql_scores(root)
    students = sorted(hostile_submissions(source, stub))
    rows = autograde(root, assignment=LESSON_01, student=students, timeout_s=HOSTILE_TIMEOUT_S)
    return {(g.student, g.cell): g for g in rows}, before, sql_scores(root)


# (student, check cell) -> (score, what the message must say); cells not listed passed
HOSTILE = {
    ("carol", "01-ex2-check"): (0, "check cell deleted from the submission"),
    ("carol", "01-ex3-check"): (0, "NameError: name 'stride_3' is not defined; its answer cell was deleted"),
    ("dave", "01-ex1-check"): (0, "NameError: name 'answer_1' is not defined"),
    ("dave", "01-ex4-check"): (0, "its answer cell raised NameError: name 'build_conv_stack' is not defined"),
    ("frank", "01-ex1-check"): (0, "its answer cell raised ValueError: I give up"),
    ("frank", "01-ex2-check"): (0, "its answer cell raised CellTimeoutError"),
    **{("erin", f"01-ex{k}-check"): (0, "check cell edited in the submission (nbgrader ran the teacher's version); "
                                        "its answer cell raised NotImplementedError") for k in range(1, 5)},
    **{("gina", f"01-ex{k}-check"): (0, "not graded: nbformat.reader.NotJSONError") for k in range(1, 5)},
}


@pytest.mark.parametrize("student", ["carol", "dave", "erin", "frank", "gina"])
def test_each_broken_submission_is_graded_cell_by_cell(hostile, student):
    rows, _, _ = hostile
    cells = sorted(cell for who, cell in rows if who == student)
    assert cells == [f"01-ex{k}-check" for k in range(1, 5)], "every check cell gets a row, none crashes the run"
    for cell in cells:
        g = rows[(student, cell)]
        score, says = HOSTILE.get((student, cell), (POINTS, "passed"))
        assert g.score == score and g.max_score == POINTS, (cell, g)
        assert says in g.message, (cell, g.message)


def test_broken_submissions_leave_other_students_grades_alone(hostile):
    rows, before, after = hostile
    for student, score in (("alice", POINTS), ("bob", 0)):
        for k in range(1, 5):
            key = (student, LESSON_01, f"01-ex{k}-check")
            assert before[key] == after[key] == (score, POINTS), key
            assert (student, f"01-ex{k}-check") not in rows  # only the five were graded
    # the other lessons' grades were not touched by the lesson-01 run
    assert {k: v for k, v in after.items() if k[1] != LESSON_01} == {k: v for k, v in before.items()
                                                                    if k[1] != LESSON_01}


def test_bad_arguments_are_refused_by_name(tmp_path, course):
    root, released, _ = course
    with pytest.raises(ValueError, match="not a course directory"):
        autograde(tmp_path)
    with pytest.raises(TypeError, match="course must be a path"):
        grades(3)
    with pytest.raises(ValueError, match="student must be"):
        submit(root, "../mallory", released[LESSON_01] / f"{LESSON_01}.ipynb")
    with pytest.raises(ValueError, match="is not in this course"):
        submit(root, "mallory", NOTEBOOKS[0], assignment="99_nothing")
    with pytest.raises(ValueError, match="notebook"):
        submit(root, "mallory", tmp_path / "missing.ipynb")
    with pytest.raises(ValueError, match="nothing submitted"):
        autograde(root, student="nobody")
    with pytest.raises(ValueError, match="timeout_s"):
        write_course(tmp_path / "c", timeout_s=0)
    with pytest.raises(ValueError, match="notebooks is empty"):
        release(tmp_path / "c", [])
    with pytest.raises(ValueError, match="course_id"):
        write_course(tmp_path / "c", course_id="my course")


def test_collect_submits_every_students_lessons_from_hub_homes(tmp_path, capsys):
    """The hub keeps students' files as homes/<student>/<notebook>; collect files each lesson as a submission."""
    root = write_course(tmp_path / "course", NOTEBOOKS)
    homes = tmp_path / "homes"
    wanted = {("zoe", LESSON_01): NOTEBOOKS[0], ("yan", NOTEBOOKS[-1].stem): NOTEBOOKS[-1]}
    for (student, _), lesson in wanted.items():
        (homes / student).mkdir(parents=True, exist_ok=True)
        (homes / student / lesson.name).write_bytes(lesson.read_bytes() + b" ")  # the student's own bytes
    (homes / "zoe" / "scratch.ipynb").write_text("{}")  # not a lesson: left alone
    (homes / "not a student").mkdir()
    (homes / "not a student" / NOTEBOOKS[0].name).write_bytes(NOTEBOOKS[0].read_bytes())
    submitted = collect(root, homes)
    assert sorted(submitted) == sorted(root / "submitted" / s / a / wanted[(s, a)].name for s, a in wanted)
    for (student, assignment), lesson in wanted.items():
        path = root / "submitted" / student / assignment / lesson.name
        assert path.read_bytes() == (homes / student / lesson.name).read_bytes()
    assert "skipped" in capsys.readouterr().err
    with pytest.raises(ValueError, match="homes"):
        collect(root, tmp_path / "nowhere")
